"""Run due checks continuously: a long-running alternative to cron.

For systemd or a container: it ticks every few seconds, runs due checks
through one long-lived worker pool, prunes old results once a day, and on
SIGTERM (or Ctrl-C) lets checks in flight finish for ``--grace`` seconds,
cancels the rest and releases their claims. A second signal cancels at once.
"""

from __future__ import annotations

import signal
from typing import Any

from django.core import checks
from django.core.management.base import CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from kong import formats, services
from kong.conf import kong_settings
from kong.management.nagios import EXIT_UNKNOWN, NagiosCommand
from kong.scheduler import Scheduler


class Command(NagiosCommand):
    help = "Run due checks continuously (instead of cron). Stops cleanly on SIGTERM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workers", type=int, help=f"worker processes (default {kong_settings.WORKERS})")
        parser.add_argument("--tick", type=float, default=5.0, help="seconds between looks for due checks")
        parser.add_argument(
            "--grace", type=float, default=5.0, help="seconds checks in flight may finish after SIGTERM"
        )
        parser.add_argument("--no-prune", action="store_true", help="do not fold and prune results daily")

    def handle(self, *args: Any, **options: Any) -> None:
        workers = kong_settings.WORKERS if options["workers"] is None else options["workers"]
        if workers < 1 or options["tick"] <= 0 or options["grace"] < 0:
            raise CommandError("--workers must be 1 or more, --tick positive, --grace 0 or more", returncode=EXIT_UNKNOWN)
        # Rows stored around Test.save (bad schedules, say) are reported, not fatal; a
        # database Kong cannot use exits 3 with one line, now rather than at the first tick.
        self.check(tags=[checks.Tags.database], databases=[DEFAULT_DB_ALIAS], fail_level=checks.CRITICAL)
        services.sync_checks()
        self.signals = 0
        previous = {sig: signal.signal(sig, self.on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        task: Any = None
        if kong_settings.EXECUTOR == "tasks":  # the engine's workers run the checks; imported only then
            from kong.tasks import run_checks_task as task
        scheduler = Scheduler(workers, prune=not options["no_prune"], task=task)
        self.verbosity = options["verbosity"]
        self.recorded = 0
        where = "enqueued as Django Tasks" if task is not None else f"{workers} workers"
        self.log(f"kong_scheduler: {where}, a tick every {options['tick']:g} s")
        try:
            scheduler.run(tick=options["tick"], stopping=lambda: self.signals > 0, on_result=self.show)
        finally:
            self.log(f"stopping: {len(scheduler.in_flight)} checks in flight, up to {options['grace']:g} s")
            for report in scheduler.shutdown(options["grace"], hurry=lambda: self.signals > 1):
                self.show(report)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.log(f"stopped: {self.recorded} checks recorded")

    def on_signal(self, signum: int, frame: Any) -> None:
        """First SIGTERM/SIGINT: stop after in-flight checks (up to --grace);
        a second: cancel them now. Only counts: nothing is cut mid-write."""
        self.signals += 1

    def show(self, report: services.CheckReport) -> None:
        self.recorded += 1
        if not report.succeeded or self.verbosity > 1:
            self.log(formats.text_line(report))

    def log(self, message: str) -> None:
        if self.verbosity > 0:
            self.stdout.write(message)
            self.stdout.flush()
