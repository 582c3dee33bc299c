"""Query helpers for the dashboard's pages.

- ``fleet``: the live state from ``Check`` rows (matrix, rollups, lights,
  the runner's heartbeat), a fixed number of queries for any history size;
- ``history``: results read through ``TestResult``'s indexes, and the
  daily history that daily rollups keep past the raw window;
- ``feeds``: Prometheus text and the JSON status.
"""

from __future__ import annotations

from kong.dashboard.feeds import counts, prometheus, status_json
from kong.dashboard.fleet import (
    CheckState,
    Filters,
    Fleet,
    Light,
    Matrix,
    Ref,
    Rollup,
    Row,
    SiteRef,
    Staleness,
    build_matrix,
    lights,
    load_fleet,
    runner_staleness,
    shortest_interval,
)
from kong.dashboard.history import (
    CHART_LIMIT,
    COMPARISON_LIMIT,
    DAILY_MIN_DAYS,
    DEFAULT_RANGE,
    HISTORY_RANGES,
    RANGES,
    DailyHistory,
    Point,
    Stats,
    daily,
    history,
    named_series_for_test,
    neighbours,
    pair_checks,
    points,
    range_start,
    recent_failures,
    recent_points,
    series_for_test,
    site_checks,
    stats,
    test_checks,
)
from kong.rollups import percentile
from kong.status import FAILING

__all__ = [
    "CHART_LIMIT", "COMPARISON_LIMIT", "DAILY_MIN_DAYS", "DEFAULT_RANGE", "FAILING", "HISTORY_RANGES", "RANGES",
    "CheckState", "DailyHistory", "Filters", "Fleet", "Light", "Matrix", "Point", "Ref", "Rollup", "Row", "SiteRef",
    "Staleness", "Stats",
    "build_matrix", "counts", "daily", "history", "lights", "load_fleet", "named_series_for_test", "neighbours",
    "pair_checks", "percentile", "points",
    "prometheus", "range_start", "recent_failures", "recent_points", "runner_staleness", "series_for_test",
    "shortest_interval", "site_checks", "stats", "status_json", "test_checks",
]  # fmt: skip
