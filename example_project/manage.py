#!/usr/bin/env python
"""The demo project's manage.py: ``python example_project/manage.py <command>``."""

from __future__ import annotations

import os
import sys


def main() -> None:
    """Run a Django management command with the demo settings."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
