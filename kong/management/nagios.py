"""A management command base whose usage errors exit 3 (Nagios UNKNOWN)."""

from __future__ import annotations

import atexit
import gc
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from kong.services import explain_database_error

EXIT_UNKNOWN = 3  # Nagios UNKNOWN: Kong could not run


class NagiosCommand(BaseCommand):
    """argparse exits 2 on a bad flag, which means "a check failed" to
    Nagios and cron; Kong's commands exit 3 with one line instead."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)

        def error(message: str) -> None:
            if not parser.called_from_command_line:
                raise CommandError(message, returncode=EXIT_UNKNOWN)
            parser.print_usage(sys.stderr)
            sys.stderr.write(f"{parser.prog}: error: {message}\n")
            sys.exit(EXIT_UNKNOWN)

        parser.error = error  # type: ignore[method-assign]
        return parser

    def run_from_argv(self, argv: list[str]) -> None:
        # A command run from the command line ends with the process: spare the
        # collector its last sweeps of the heap at exit (0.1 s after 2,000 checks).
        atexit.register(gc.freeze)
        super().run_from_argv(argv)

    def execute(self, *args: Any, **options: Any) -> str | None:
        """Run the command; a database Kong cannot use, found anywhere (even
        by Django's own system checks before ``handle``), exits 3 with one line."""
        try:
            return super().execute(*args, **options)
        except DatabaseError as error:
            raise CommandError(explain_database_error(error), returncode=EXIT_UNKNOWN) from error
