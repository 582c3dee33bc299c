"""Run the checks that run-now claimed (``kong.run_now`` starts this)."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import CommandParser

from kong import formats, run_now
from kong.management.nagios import NagiosCommand


class Command(NagiosCommand):
    help = (
        "Run the checks still claimed with --token in worker processes and record them. "
        "The dashboard's run-now starts this; it is not for cron (use check_sites --due)."
    )
    # The web server that starts this has run them; they would only print the same warnings to its log again.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--token", required=True, help="the claim token run-now holds on the checks")
        parser.add_argument("checks", nargs="+", type=int, metavar="CHECK_ID", help="Check ids")

    def handle(self, *args: Any, **options: Any) -> None:
        report = run_now.run(options["token"], options["checks"])  # a database error exits 3 (NagiosCommand)
        for item in report.results:
            self.stdout.write(formats.text_line(item))
        if report.results:
            self.stdout.write(formats.summary(report))
        if report.exit_code:
            sys.exit(report.exit_code)
