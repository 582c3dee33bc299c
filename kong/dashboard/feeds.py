"""The fleet as machine-readable feeds: Prometheus text and a JSON status."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.utils import timezone

from kong.dashboard.fleet import CheckState, Fleet, Staleness
from kong.models import CheckStatus


def _label(value: str | None) -> str:
    """A Prometheus label value: backslash, quote and newline escaped."""
    return (value or "").replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def counts(fleet: Fleet) -> dict[str, int]:
    """How many checks are in each status."""
    found = dict.fromkeys(CheckStatus.values, 0)
    for check in fleet.checks:
        found[check.status] = found.get(check.status, 0) + 1
    return found


def _in_order(checks: Iterable[CheckState]) -> list[CheckState]:
    """By site, test and server slug, so feeds diff cleanly between scrapes."""
    return sorted(
        checks,
        key=lambda check: (
            check.site.slug, check.test.slug, check.server.slug if check.server else "",
            check.location.slug if check.location else "",
        ),
    )  # fmt: skip


def prometheus(fleet: Fleet) -> str:
    """The fleet in Prometheus text format (version 0.0.4).

    Per check: ``kong_check_up`` (1 passed, 0 failing; pending checks are
    left out), ``kong_check_duration_seconds`` of the latest result,
    ``kong_check_consecutive_failures`` and ``kong_check_last_run_timestamp_seconds``.
    Totals: ``kong_checks{status="..."}``.
    """
    up, duration, failures, last_run = [], [], [], []
    for check in _in_order(fleet.checks):
        server = check.server.slug if check.server else ""
        location = check.location.slug if check.location else ""
        labels = (
            f'{{site="{_label(check.site.slug)}",test="{_label(check.test.slug)}",server="{_label(server)}",'
            f'location="{_label(location)}"}}'
        )
        failures.append(f"kong_check_consecutive_failures{labels} {check.consecutive_failures}")
        if check.status == CheckStatus.PENDING or check.last_run_at is None:
            continue
        up.append(f"kong_check_up{labels} {0 if check.is_failing else 1}")
        last_run.append(f"kong_check_last_run_timestamp_seconds{labels} {check.last_run_at.timestamp():.3f}")
        if check.duration is not None:
            duration.append(f"kong_check_duration_seconds{labels} {check.duration / 1000:.6f}")
    totals = [f'kong_checks{{status="{status}"}} {n}' for status, n in counts(fleet).items()]
    lines = []
    for name, help_text, samples in (
        ("kong_check_up", "1 if the check's latest result passed, 0 if it failed.", up),
        ("kong_check_duration_seconds", "Duration of the check's latest run.", duration),
        ("kong_check_consecutive_failures", "Failing runs in a row.", failures),
        ("kong_check_last_run_timestamp_seconds", "When the check last ran (Unix time).", last_run),
        ("kong_checks", "Checks by current status.", totals),
    ):
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *samples]
    return "\n".join(lines) + "\n"


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def status_json(fleet: Fleet, staleness: Staleness | None = None) -> dict[str, object]:
    """Counts and every check's state, for ``api/status.json``."""
    failing = sum(1 for check in fleet.checks if check.is_failing)
    last_runs = [check.last_run_at for check in fleet.checks if check.last_run_at]
    return {
        "generated_at": timezone.now().isoformat(),
        "total": len(fleet.checks),
        "failing": failing,
        "ok": failing == 0,
        "counts": counts(fleet),
        "stale": staleness is not None,
        "last_run_at": _iso(max(last_runs, default=None)),
        "checks": [
            {
                "site": check.site.slug,
                "test": check.test.slug,
                "server": check.server.slug if check.server else None,
                "location": check.location.slug if check.location else None,
                "status": check.status,
                "since": _iso(check.status_since),
                "last_run_at": _iso(check.last_run_at),
                "duration_ms": None if check.duration is None else round(check.duration, 1),
                "consecutive_failures": check.consecutive_failures,
                "failed_line": check.failed_line,
                "result_id": check.result_id,
                "muted": check.is_muted,
            }
            for check in _in_order(fleet.checks)
        ],
    }
