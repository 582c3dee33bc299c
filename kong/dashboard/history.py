"""One check's (or one test's) history, read from ``TestResult`` through its
indexes: ``(site, test, -run_date)``, ``(test, -run_date)`` and
``(succeeded, -run_date)``. Never a scan of the table.

Raw results are pruned after ``KONG_RESULT_RETENTION_DAYS``; the daily
history (``kong.rollups.daily_history``) keeps the days before that.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from kong.models import Check, Site, Test, TestResult
from kong.rollups import DayStats, daily_history, percentile, raw_cutoff

# History ranges a page can show, by query-string value.
RANGES: dict[str, timedelta] = {
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
DEFAULT_RANGE = "7d"
# The history page also offers ranges beyond the raw window, drawn from daily rollups.
HISTORY_RANGES: dict[str, timedelta] = {**RANGES, "365d": timedelta(days=365)}
# The daily chart covers the page's range, but never fewer days than this.
DAILY_MIN_DAYS = 7
# A chart and its statistics cover at most this many of the newest results in range.
CHART_LIMIT = 2000
# The comparison chart on a test's page reads at most this many of its newest results.
COMPARISON_LIMIT = 3000


@dataclass(frozen=True, slots=True)
class Point:
    """One result on a chart."""

    id: int
    run_date: datetime
    duration: float
    succeeded: bool
    status: str


@dataclass(frozen=True)
class Stats:
    runs: int
    passed: int
    p50: float | None
    p95: float | None

    @property
    def pass_rate(self) -> float | None:
        return 100.0 * self.passed / self.runs if self.runs else None


def stats(points: Sequence[Point]) -> Stats:
    durations = [point.duration for point in points]
    return Stats(
        runs=len(points),
        passed=sum(point.succeeded for point in points),
        p50=percentile(durations, 0.50),
        p95=percentile(durations, 0.95),
    )


def range_start(
    name: str, now: datetime | None = None, ranges: dict[str, timedelta] = RANGES
) -> tuple[str, datetime]:
    """The validated range name (one of ``ranges``, else the default) and when it starts."""
    name = name if name in ranges else DEFAULT_RANGE
    return name, (now or timezone.now()) - ranges[name]


@dataclass(frozen=True)
class DailyHistory:
    """A pair's daily history, oldest day first, and its totals."""

    days: list[DayStats]
    raw_since: datetime | None  # raw results before this are pruned; None: kept forever

    @property
    def runs(self) -> int:
        return sum(day.runs for day in self.days)

    @property
    def failures(self) -> int:
        return sum(day.failures for day in self.days)

    @property
    def pass_rate(self) -> float | None:
        return 100.0 * (self.runs - self.failures) / self.runs if self.runs else None

    @property
    def failed_days(self) -> list[DayStats]:
        """Days with at least one failure, newest first."""
        return [day for day in reversed(self.days) if day.failures]


def daily(site: Site, test: Test, span: timedelta, now: datetime | None = None) -> DailyHistory:
    """``test`` on ``site`` (every server combined) per calendar day over
    ``span`` (at least ``DAILY_MIN_DAYS`` days), rolled-up days included.
    Three queries whatever the span (``kong.rollups.daily_history``)."""
    days = max(DAILY_MIN_DAYS, math.ceil(span / timedelta(days=1)))
    return DailyHistory(daily_history(test, site, days=days, now=now), raw_cutoff(now))


def history(site: Site, test: Test, since: datetime, location: str = "") -> QuerySet[TestResult]:
    """One pair's results since ``since``, newest first (index kong_result_history);
    only those run from ``location`` (a slug, or "default") when given."""
    results = (
        TestResult.objects.filter(site=site, test=test, run_date__gte=since)
        .select_related("server", "location")
        .defer("content", "script")
    )
    if location == "default":
        return results.filter(location__isnull=True)
    if location:
        return results.filter(location__slug=location)
    return results


def points(results: QuerySet[TestResult], limit: int = CHART_LIMIT) -> list[Point]:
    """The newest ``limit`` of ``results`` as chart points, oldest first."""
    rows = results.values_list("pk", "run_date", "duration", "succeeded", "status")[:limit]
    return [Point(*row) for row in reversed(rows)]


def recent_points(checks: Sequence[Check], limit: int = 30) -> dict[int, list[Point]]:
    """The latest ``limit`` results of each check, oldest first, by check id.

    One LIMITed index seek per check on one site: the cost follows the
    number of tests on the site, never the length of the history.
    """
    found: dict[int, list[Point]] = {}
    for check in checks:
        results = TestResult.objects.filter(site_id=check.site_id, test_id=check.test_id)
        if check.server_id:
            results = results.filter(server_id=check.server_id)
        if check.location_id:
            results = results.filter(location_id=check.location_id)
        found[check.pk] = points(results, limit)
    return found


def series_for_test(test: Test, since: datetime, limit: int = COMPARISON_LIMIT) -> dict[int, list[Point]]:
    """Per site id, the test's newest ``limit`` results since ``since``, oldest
    first, read through index kong_result_test.

    Sites run on the same schedule, so the newest results cover every site
    over the same recent span, however long the range.
    """
    rows = (
        TestResult.objects.filter(test=test, run_date__gte=since)
        .order_by("-run_date")
        .values_list("site_id", "pk", "run_date", "duration", "succeeded", "status")[:limit]
    )
    series: dict[int, list[Point]] = defaultdict(list)
    for site_id, pk, run_date, duration, succeeded, status in reversed(rows):
        series[site_id].append(Point(pk, run_date, duration, succeeded, status))
    return dict(series)


def recent_failures() -> QuerySet[TestResult]:
    """Failed results, newest first, read through index kong_result_failed.

    Ordered by run_date
    alone, which the index holds in order: with the usual ``-id`` tie-break
    SQLite prefers walking every result by date, and deep pages get slow.
    """
    return (
        TestResult.objects.failures()
        .order_by("-run_date")
        .select_related("test", "site", "server")
        .defer("content", "script")
    )


def neighbours(result: TestResult) -> tuple[TestResult | None, TestResult | None]:
    """The previous (older) and next (newer) result of the same check."""
    same = TestResult.objects.filter(site_id=result.site_id, test_id=result.test_id).only("pk", "run_date")
    # The plain range bound lets the index seek; the Q breaks ties in run_date.
    when, pk = result.run_date, result.pk
    older = same.filter(Q(run_date__lt=when) | Q(pk__lt=pk), run_date__lte=when)
    newer = same.filter(Q(run_date__gt=when) | Q(pk__gt=pk), run_date__gte=when)
    previous = older.order_by("-run_date", "-pk").first()
    following = newer.order_by("run_date", "pk").first()
    return previous, following


# -- one site, one test, one pair: the detail pages' read models ----------------


def site_checks(site: Site) -> list[tuple[Check, list[Point]]]:
    """Every active check on ``site`` with its recent points, by test name."""
    checks = list(
        Check.objects.active()
        .filter(site=site)
        .select_related("test", "server", "last_result")
        .defer("last_result__content", "last_result__script")
        .order_by("test__name", "server__name")
    )
    recent = recent_points(checks)
    return [(check, recent[check.pk]) for check in checks]


def pair_checks(site: Site, test: Test) -> list[Check]:
    """The checks of ``test`` on ``site``: one, or one per server."""
    return list(
        Check.objects.active()
        .filter(site=site, test=test)
        .select_related("server", "location")
        .order_by("server__name", "location__name")
    )


def test_checks(test: Test) -> list[Check]:
    """Every active check of ``test``, by site name."""
    return list(
        Check.objects.active()
        .filter(test=test)
        .select_related("site", "server", "last_result")
        .defer("last_result__content", "last_result__script", "site__variables")
        .order_by("site__name", "server__name")
    )


def named_series_for_test(test: Test, since: datetime, checks: Sequence[Check]) -> list[tuple[str, list[Point]]]:
    """``series_for_test`` by site name, sorted; sites the test no longer
    applies to keep their history under their own name."""
    series = series_for_test(test, since)
    names = {check.site_id: check.site.name for check in checks}
    missing = set(series) - set(names)
    if missing:
        names.update(Site.objects.filter(pk__in=missing).values_list("pk", "name"))
    return sorted(((names[site_id], points) for site_id, points in series.items()), key=lambda item: item[0])
