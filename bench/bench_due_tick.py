"""P5: one ``check_sites --due`` tick over a fleet where nothing is due.

Builds 10,000 checks (and, side by side, 1,000), marks every one as run with
its next slot in the future, then times ``call_command("check_sites",
"--due", "--quiet")`` in-process (median of ``--repeat``) and counts its SQL
queries: the count must not grow with the fleet. The wall time of a whole
``python -m django check_sites --due`` process (interpreter, Django and twill
start-up included) is printed as well. Goal: the tick <= 0.5 s.

    python bench/bench_due_tick.py [--checks 10000] [--json]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from common import REPO, Row, build_fleet, emit, manage_env, profile_if_missed, setup_django

GOAL_SECONDS = 0.5


def tick() -> tuple[float, int]:
    """(seconds, SQL queries) of one in-process ``check_sites --due`` with nothing due."""
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        call_command("check_sites", "--due", "--quiet")
        seconds = time.perf_counter() - started
    return seconds, len(queries)


def nothing_due(url: str, sites: int, tests: int, prefix: str) -> None:
    from django.utils import timezone

    from kong.models import Check

    build_fleet(url, sites, tests=tests, prefix=prefix)
    Check.objects.update(next_due_at=timezone.now() + timedelta(hours=1), last_run_at=timezone.now())


def measure(repeat: int) -> tuple[float, int]:
    tick()  # the first tick pays for imports and the connection
    runs = [tick() for _ in range(repeat)]
    return statistics.median(seconds for seconds, _ in runs), max(count for _, count in runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    url = "http://127.0.0.1:9/"  # never contacted: nothing is due

    with tempfile.TemporaryDirectory() as workdir:
        setup_django(Path(workdir))
        from kong.models import Check

        nothing_due(url, options.checks // 10 // 10, 10, "small")
        small_count = Check.objects.count()
        small_seconds, small_queries = measure(options.repeat)
        nothing_due(url, (options.checks - small_count) // 10, 10, "large")
        count = Check.objects.count()
        seconds, queries = measure(options.repeat)
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "django", "check_sites", "--due", "--quiet", "--settings=bench.settings"],
            cwd=REPO, env=manage_env(Path(workdir)), check=True,
        )  # fmt: skip
        process_seconds = time.perf_counter() - started
        row = Row(
            id="P5",
            name=f"check_sites --due tick, {count:,} checks, none due",
            measured=f"{seconds * 1000:.0f} ms, {queries} queries",
            goal=f"<= {GOAL_SECONDS * 1000:.0f} ms",
            met=seconds <= GOAL_SECONDS and queries == small_queries,
            notes=(
                f"{small_count:,} checks: {small_seconds * 1000:.0f} ms, {small_queries} queries (same count); "
                f"a whole `manage.py check_sites --due` process: {process_seconds:.2f} s"
            ),
            extra={"seconds": seconds, "queries": queries, "small_queries": small_queries},
        )
        profile_if_missed(row, tick)
    emit([row], options.json, "Kong benchmark P5: an idle --due tick")


if __name__ == "__main__":
    main()
