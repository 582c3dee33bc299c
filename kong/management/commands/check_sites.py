"""Run Kong checks: every active test on every live site, or a selection."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from kong import formats, progress, services
from kong.conf import kong_settings
from kong.management.nagios import EXIT_UNKNOWN, NagiosCommand


class Command(NagiosCommand):
    help = "Run twill smoke tests against the fleet. Exit 0 all passed, 2 any failed, 3 could not run."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("-t", "--test", action="append", default=[], help="test slug (repeatable)")
        parser.add_argument("-s", "--site", action="append", default=[], help="site slug (repeatable)")
        parser.add_argument("-T", "--type", action="append", default=[], help="type slug (repeatable)")
        parser.add_argument("--server", action="append", default=[], help="server slug (repeatable)")
        parser.add_argument("--location", action="append", default=[], help="location slug (repeatable)")
        parser.add_argument("-l", "--list", action="store_true", help="list the checks, run nothing")
        parser.add_argument("--due", action="store_true", help="run only checks due by their schedule")
        parser.add_argument("--enqueue", action="store_true", help="claim and enqueue as Django Tasks; run nothing")
        parser.add_argument("--workers", type=int, help=f"worker processes (default {kong_settings.WORKERS}; 0 inline)")
        parser.add_argument("--timeout", type=float, help="wall-clock seconds per check")
        parser.add_argument("--format", choices=["text", "json", "nagios"], default="text")
        parser.add_argument("--junit-xml", type=Path, help="also write a JUnit XML report here")
        parser.add_argument("--dry-run", action="store_true", help="render and validate only")
        parser.add_argument("--quiet", action="store_true", help="print nothing unless something fails")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["workers"] is not None and options["workers"] < 0:
            raise CommandError("--workers must be 0 or more", returncode=EXIT_UNKNOWN)
        if options["timeout"] is not None and options["timeout"] <= 0:
            raise CommandError("--timeout must be positive", returncode=EXIT_UNKNOWN)
        if options["junit_xml"] and not options["junit_xml"].parent.is_dir():  # fail before running
            raise CommandError(f"--junit-xml: no folder {options['junit_xml'].parent}", returncode=EXIT_UNKNOWN)
        try:
            code = self.check_sites(options)
        except services.KongError as error:
            raise CommandError(str(error), returncode=EXIT_UNKNOWN) from error
        except BrokenPipeError:  # `check_sites | head`: every result is recorded; stop printing
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            code = EXIT_UNKNOWN
        if code:
            sys.exit(code)

    def check_sites(self, options: dict[str, Any]) -> int:
        """Run (or list, or dry-run) the selection; returns the exit code."""
        selectors = {key: options[key[:-1]] for key in ("tests", "sites", "types", "servers", "locations")}
        if options["list"] or options["dry_run"]:  # read only: nothing is written
            planned = services.preview_checks(**selectors, due=options["due"])
            if options["list"]:
                for check in planned:
                    self.stdout.write(formats.list_line(check))
                return 0
            problems = services.dry_run(planned)
            for check, problem in problems:
                self.stdout.write(formats.dry_run_line(check, problem))
            return 2 if any(problem for _, problem in problems) else 0
        checks = services.select_checks(**selectors)
        if options["enqueue"] or (options["due"] and kong_settings.EXECUTOR == "tasks"):
            return self.enqueue(checks, options)
        token = ""
        if options["due"]:  # claim only what this process will really run: the default location's, or --location's
            token = services.new_token()
            checks = services.claim_due(services.here(checks, options["location"]), token=token)
        elif not checks.exists():
            raise services.KongError("nothing to check: no active test applies to a live site")
        report = services.run_checks(
            checks, workers=options["workers"], timeout=options["timeout"], token=token,
            on_result=self.progress(options),
        )  # fmt: skip
        verbose, tty = options["verbosity"] > 1, self.stdout.isatty()
        for line in formats.render(report, options["format"], quiet=options["quiet"], verbose=verbose, tty=tty):
            self.stdout.write(line)
        self.stdout.flush()
        if options["junit_xml"]:
            options["junit_xml"].write_bytes(formats.as_junit(report))
        return report.exit_code

    def enqueue(self, checks: Any, options: dict[str, Any]) -> int:
        from kong.tasks import run_checks_task  # the engine is imported only when used

        report = services.enqueue_checks(checks, run_checks_task, due=options["due"])
        if not options["quiet"]:
            self.stdout.write(report.render(options["format"]))
        return 0

    def progress(self, options: dict[str, Any]) -> Any:
        """Failures as they happen, plus a bar with a count and ETA on a terminal; text format only."""
        if options["format"] != "text" or options["quiet"]:
            return None
        return progress.CheckProgress(self.stdout, label=formats.label, failure_line=formats.text_line)
