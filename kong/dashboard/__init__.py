"""Query helpers for the dashboard's pages.

- ``fleet``: the live state from ``Check`` rows (matrix, rollups, lights,
  the runner's heartbeat), a fixed number of queries for any history size;
- ``history``: results read through ``TestResult``'s indexes;
- ``feeds``: Prometheus text and the JSON status.
"""

from __future__ import annotations

from kong.dashboard.feeds import counts, prometheus, status_json
from kong.dashboard.fleet import (
    FAILING,
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
    DEFAULT_RANGE,
    RANGES,
    Point,
    Stats,
    history,
    neighbours,
    percentile,
    points,
    range_start,
    recent_failures,
    recent_points,
    series_for_test,
    stats,
)

__all__ = [
    "CHART_LIMIT", "COMPARISON_LIMIT", "DEFAULT_RANGE", "FAILING", "RANGES",
    "CheckState", "Filters", "Fleet", "Light", "Matrix", "Point", "Ref", "Rollup", "Row", "SiteRef",
    "Staleness", "Stats",
    "build_matrix", "counts", "history", "lights", "load_fleet", "neighbours", "percentile", "points",
    "prometheus", "range_start", "recent_failures", "recent_points", "runner_staleness", "series_for_test",
    "shortest_interval", "stats", "status_json",
]  # fmt: skip
