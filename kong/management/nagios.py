"""A management command base whose usage errors exit 3 (Nagios UNKNOWN)."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

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
