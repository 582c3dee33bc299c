"""Fold raw results into daily rollups, then delete those past the retention window.

With django-tasks-db installed, it also marks failed Kong's tasks left
RUNNING by a worker that died (for longer than max(KONG_CLAIM_LEASE, 1 h)).

``kong_scheduler`` runs this once a day by itself; with cron, run it daily:
``17 3 * * * manage.py kong_prune --quiet``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from kong import rollups, services
from kong.conf import kong_settings
from kong.management.nagios import NagiosCommand
from kong.models import TestResult


class Command(NagiosCommand):
    help = (
        "Roll raw results up into daily rows, then delete raw results older than "
        "KONG_RESULT_RETENTION_DAYS, in small batches."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            help=f"keep this many days of raw results (default KONG_RESULT_RETENTION_DAYS, "
            f"{kong_settings.RESULT_RETENTION_DAYS}; 0 keeps them all)",
        )
        parser.add_argument("--batch-size", type=int, default=2000, help="rows deleted per transaction")
        parser.add_argument("--dry-run", action="store_true", help="say what would be done, change nothing")
        parser.add_argument("--quiet", action="store_true", help="print nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        if (options["days"] is not None and options["days"] < 0) or options["batch_size"] < 1:
            raise CommandError("--days must be 0 or more and --batch-size 1 or more")
        self.quiet = options["quiet"]
        cutoff = rollups.raw_cutoff(retention_days=options["days"])
        if options["dry_run"]:
            days = rollups.unfolded_days()
            old = TestResult.objects.filter(run_date__lt=cutoff).count() if cutoff else 0
            self.say(f"would fold {len(days)} days and delete {old} results older than {cutoff or 'never'}")
            stale = services.stale_tasks()
            if stale is not None:
                self.say(f"would mark {stale.count()} Kong tasks failed whose worker died")
            return
        report = rollups.prune(retention_days=options["days"], batch_size=options["batch_size"])
        self.say(
            f"folded {report.folded_days} days into {report.rollups} daily rollups; "
            f"deleted {report.deleted} results older than {cutoff or 'never (retention is off)'}"
        )
        if services.stale_tasks() is not None:  # django-tasks-db: a killed db_worker leaves its task RUNNING
            self.say(f"marked {services.fail_stale_tasks()} Kong tasks failed whose worker died")

    def say(self, message: str) -> None:
        if not self.quiet:
            self.stdout.write(message)
