"""Daily rollups of raw results, pruning, and the long-range history charts read.

Raw TestResults are kept for ``KONG_RESULT_RETENTION_DAYS`` days. Before any
is deleted, every complete day is folded into one DailyRollup row per check
(runs, failures, mean, p95 and max duration), so a year of history costs 365
small rows per check instead of tens of thousands of results.

Days are calendar days in the schedule time zone (``KONG_TIME_ZONE``, else
``TIME_ZONE``). A day is folded once it is over; folding a day again
recomputes it from its raw results, so it is idempotent while those are
complete. Pruning only deletes days that have been folded, and a day that
has rollups is never folded again, so a prune that dies half-way through a
day's deletions loses nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from itertools import groupby
from typing import Any

from django.db import transaction
from django.db.models import Max, Min
from django.utils import timezone

from kong.conf import kong_settings
from kong.models import Check, DailyRollup, Server, Site, Test, TestResult
from kong.schedule import schedule_timezone


@dataclass(frozen=True)
class DayStats:
    """One day of one check's history (durations in milliseconds)."""

    day: date
    runs: int = 0
    failures: int = 0
    mean_duration: float = 0.0
    p95_duration: float = 0.0
    max_duration: float = 0.0

    @property
    def success_rate(self) -> float | None:
        """Share of runs that passed (0..1), or None for a day without runs."""
        return (self.runs - self.failures) / self.runs if self.runs else None


@dataclass
class PruneReport:
    folded_days: int = 0
    rollups: int = 0
    deleted: int = 0
    cutoff: datetime | None = None
    complete: bool = True  # False when the time budget ran out first


# -- days --------------------------------------------------------------------


def local_day(moment: datetime) -> date:
    """The calendar day ``moment`` falls on in the schedule time zone."""
    return moment.astimezone(schedule_timezone()).date()


def day_start(day: date) -> datetime:
    """The first instant of ``day`` in the schedule time zone, as an aware datetime."""
    return datetime.combine(day, clock_time(0), tzinfo=schedule_timezone())


def raw_cutoff(now: datetime | None = None, retention_days: int | None = None) -> datetime | None:
    """Raw results before this instant are pruned; None when retention is off
    (``KONG_RESULT_RETENTION_DAYS`` is None or 0). The cutoff is a day boundary,
    so a day is either wholly raw or wholly rolled up."""
    days = kong_settings.RESULT_RETENTION_DAYS if retention_days is None else retention_days
    if not days:
        return None
    return day_start(local_day(now or timezone.now()) - timedelta(days=int(days)))


# -- folding -----------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of ``values`` (need not be sorted); None when
    there are none. The dashboard's statistics and the rollups share it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return float(ordered[rank - 1])


def fold_day(day: date) -> int:
    """Replace ``day``'s rollups with aggregates of its raw results; returns
    how many rollup rows the day has. Idempotent while the day's raw results
    are complete (``prune`` never refolds a day it has started deleting)."""
    rows = (
        TestResult.objects.filter(
            run_date__gte=day_start(day), run_date__lt=day_start(day + timedelta(days=1))
        )
        .order_by("test_id", "site_id", "server_id", "duration")
        .values_list("test_id", "site_id", "server_id", "duration", "succeeded")
        .iterator(chunk_size=5000)
    )
    rollups = [
        _rollup(day, key, [(duration, succeeded) for *_, duration, succeeded in group])
        for key, group in groupby(rows, key=lambda row: (row[0], row[1], row[2]))
    ]
    with transaction.atomic():
        DailyRollup.objects.filter(day=day).delete()
        # ignore_conflicts: a second scheduler folding the same day at once is harmless.
        DailyRollup.objects.bulk_create(rollups, batch_size=500, ignore_conflicts=True)
    return len(rollups)


def _rollup(day: date, key: tuple[int, int, int | None], runs: list[tuple[float, bool]]) -> DailyRollup:
    durations = [duration for duration, _ in runs]  # ascending: the query sorts them
    test_id, site_id, server_id = key
    return DailyRollup(
        test_id=test_id,
        site_id=site_id,
        server_id=server_id,
        day=day,
        runs=len(runs),
        failures=sum(1 for _, succeeded in runs if not succeeded),
        mean_duration=round(sum(durations) / len(durations), 1),
        p95_duration=round(percentile(durations, 0.95) or 0.0, 1),
        max_duration=round(durations[-1], 1),
    )


def unfolded_days(now: datetime | None = None) -> list[date]:
    """Complete days (before today) that have raw results but no rollups
    yet, oldest first. Walks the run_date index from one day with results
    to the next: one small query per such day, never a scan."""
    today = local_day(now or timezone.now())
    days: list[date] = []
    moment = TestResult.objects.aggregate(oldest=Min("run_date"))["oldest"]
    while moment is not None and local_day(moment) < today:
        days.append(local_day(moment))
        later = TestResult.objects.filter(run_date__gte=day_start(days[-1] + timedelta(days=1)))
        moment = later.order_by("run_date").values_list("run_date", flat=True).first()
    folded = set(DailyRollup.objects.filter(day__in=days).values_list("day", flat=True).distinct())
    return [day for day in days if day not in folded]


# -- pruning -----------------------------------------------------------------


def prune(
    now: datetime | None = None,
    *,
    retention_days: int | None = None,
    batch_size: int = 2000,
    time_budget: float | None = None,
) -> PruneReport:
    """Fold every complete day not yet rolled up, then delete raw results
    older than the retention window in batches of ``batch_size`` rows, each
    in its own short transaction, so the table is never locked for long.

    With ``time_budget`` seconds, stops between steps (a day's fold, a
    batch) once the budget is spent, after at least one step, and reports
    ``complete=False``; calling again carries on.
    """
    started = time.monotonic()
    report = PruneReport(cutoff=raw_cutoff(now, retention_days))
    steps = 0

    def out_of_time() -> bool:
        return time_budget is not None and steps > 0 and time.monotonic() - started > time_budget

    for day in unfolded_days(now):
        if out_of_time():
            report.complete = False
            return report
        steps += 1
        report.rollups += fold_day(day)
        report.folded_days += 1
    if report.cutoff is None:
        return report
    old = TestResult.objects.filter(run_date__lt=report.cutoff).order_by()
    while True:
        if out_of_time():
            report.complete = False
            break
        batch = list(old.values_list("pk", flat=True)[:batch_size])
        if not batch:
            break
        steps += 1
        with transaction.atomic():
            # Deferred rows: the collector only needs keys to SET_NULL Check.last_result.
            TestResult.objects.filter(pk__in=batch).only("pk").delete()
        report.deleted += len(batch)
    return report


# -- history -------------------------------------------------------------------


def daily_history(
    test: Test | int,
    site: Site | int,
    server: Server | int | None = None,
    *,
    days: int = 90,
    now: datetime | None = None,
) -> list[DayStats]:
    """One DayStats per calendar day for the last ``days`` days (today
    included, oldest first, days without runs as zeros), for ``test`` on
    ``site``: through ``server`` when given, else all its runs combined.

    Folded days come from DailyRollup (one row per day), so ranges beyond
    the raw window keep their history; days not folded yet (today, at
    least) are computed from raw results. Three queries whatever the range.
    When several servers' rollups are combined, p95 is the highest of their
    p95s (an upper bound); everything else is exact.
    """
    today = local_day(now or timezone.now())
    first = today - timedelta(days=max(1, days) - 1)
    where: dict[str, Any] = {"test": test, "site": site}
    if server is not None:
        where["server"] = server
    last_folded = DailyRollup.objects.aggregate(last=Max("day"))["last"]
    stats: dict[date, DayStats] = {}
    if last_folded is not None and last_folded >= first:
        rollups = DailyRollup.objects.filter(day__gte=first, day__lte=last_folded, **where)
        for day, group in groupby(rollups.order_by("day"), key=lambda rollup: rollup.day):
            stats[day] = _combine(day, list(group))
    raw_from = first if last_folded is None else max(first, last_folded + timedelta(days=1))
    raw = (
        TestResult.objects.filter(run_date__gte=day_start(raw_from), **where)
        .order_by()
        .values_list("run_date", "duration", "succeeded")
    )
    by_day: dict[date, list[tuple[float, bool]]] = {}
    for run_date, duration, succeeded in raw:
        by_day.setdefault(local_day(run_date), []).append((duration, succeeded))
    for day, runs in by_day.items():
        runs.sort()
        rollup = _rollup(day, (0, 0, None), runs)
        stats[day] = _combine(day, [rollup])
    return [
        stats.get(first + timedelta(days=offset), DayStats(first + timedelta(days=offset)))
        for offset in range((today - first).days + 1)
    ]


def _combine(day: date, rollups: Iterable[DailyRollup]) -> DayStats:
    rollups = [rollup for rollup in rollups if rollup.runs]
    runs = sum(rollup.runs for rollup in rollups)
    if not runs:
        return DayStats(day)
    return DayStats(
        day=day,
        runs=runs,
        failures=sum(rollup.failures for rollup in rollups),
        mean_duration=round(sum(rollup.mean_duration * rollup.runs for rollup in rollups) / runs, 1),
        p95_duration=max(rollup.p95_duration for rollup in rollups),
        max_duration=max(rollup.max_duration for rollup in rollups),
    )


def check_history(check: Check, *, days: int = 90, now: datetime | None = None) -> list[DayStats]:
    """``daily_history`` for one Check row (its own server, if any)."""
    return daily_history(check.test_id, check.site_id, check.server_id, days=days, now=now)
