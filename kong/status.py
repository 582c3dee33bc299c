"""What a check's status means, in one place: the values, which of them
fail, how each is shown (icon, text symbol) and which is worst.

A base module: models, the runner, formats, the dashboard and templates all
read these, and it imports nothing of Kong's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.db import models
from django.utils import timezone


class Status(models.TextChoices):
    """How one run of a check ended."""

    PASSED = "passed", "passed"
    FAILED = "failed", "failed"  # an assertion failed
    ERROR = "error", "error"  # a network or script error
    TIMEOUT = "timeout", "timeout"
    CRASHED = "crashed", "crashed"  # the worker process died


class CheckStatus(models.TextChoices):
    """A check's current state: its last run's status, or pending before one."""

    PENDING = "pending", "pending"
    PASSED = "passed", "passed"
    FAILED = "failed", "failed"
    ERROR = "error", "error"
    TIMEOUT = "timeout", "timeout"
    CRASHED = "crashed", "crashed"


# Every status that counts as failing, for alerts, the dashboard and exit codes.
FAILING: frozenset[str] = frozenset({Status.FAILED, Status.ERROR, Status.TIMEOUT, Status.CRASHED})
# Statuses that are not failing: a pass, or no run yet.
OK: frozenset[str] = frozenset({CheckStatus.PASSED, CheckStatus.PENDING})

# Shown with the word, never by colour alone.
ICONS: dict[str, str] = {
    CheckStatus.PASSED: "✓",
    CheckStatus.FAILED: "✗",
    CheckStatus.ERROR: "⚠",
    CheckStatus.TIMEOUT: "◷",
    CheckStatus.CRASHED: "☠",
    CheckStatus.PENDING: "○",
}
UNKNOWN_ICON = "?"

# check_sites' text lines.
SYMBOLS: dict[str, str] = {
    Status.PASSED: "ok",
    Status.FAILED: "FAIL",
    Status.ERROR: "ERROR",
    Status.TIMEOUT: "TIMEOUT",
    Status.CRASHED: "CRASH",
}

# The worst first, for a cell that shows one check per server.
SEVERITY: tuple[str, ...] = ("crashed", "error", "timeout", "failed", "pending", "passed")


def is_failing(status: str) -> bool:
    return status in FAILING


def icon(status: str) -> str:
    return ICONS.get(status, UNKNOWN_ICON)


def worst(statuses: Sequence[str]) -> str:
    """The most severe of ``statuses`` (unknown values rank first)."""
    return min(statuses, key=lambda status: SEVERITY.index(status) if status in SEVERITY else -1)


def is_muted(muted_until: datetime | None, now: datetime | None = None) -> bool:
    """Whether a mute that lasts until ``muted_until`` is still on at ``now``."""
    return muted_until is not None and muted_until > (now or timezone.now())
