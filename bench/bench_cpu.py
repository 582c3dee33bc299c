"""P2: CPU-bound checks. 1,000 checks against a server with no added latency.

Side by side in the same run, best of ``--rounds`` each, interleaved:

- a bare twill loop in one process (bench/bare_twill.py: a fresh browser,
  captured output and ``execute_string`` per check, no Kong, no Django);
- single-process Kong end to end (``run_checks(workers=0)``: render,
  validate, run, write the result and the check's state to the database);
- Kong with its worker pool (``--workers``, default 4 on any machine).

Goals: single-process Kong >= 0.9x the bare loop; Kong with the pool >= 1.5x
the bare single-process loop. CPU seconds per check (parent and workers) are
printed too: on a shared machine they move less than wall-clock rates.

    python bench/bench_cpu.py [--checks 1000] [--workers 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from common import (
    REPO,
    LatencyServer,
    Row,
    build_fleet,
    clear_results,
    emit,
    profile_if_missed,
    setup_django,
    timed,
)

SINGLE_GOAL = 0.9
POOL_GOAL = 1.5


def bare_loop(url: str, count: int) -> tuple[float, float]:
    """(seconds, CPU seconds) of raw twill checking ``count`` times in one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bare_twill.py"), "loop", "--url", url, "--count", str(count)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(out)
    assert result["passed"] == count, result
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return float(result["seconds"]), cpu


def cpu_now() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir, LatencyServer(0.0) as server:
        setup_django(Path(workdir))
        from kong import services

        build_fleet(server.url, options.checks)
        checks = list(services.select_checks())

        def kong(workers: int) -> tuple[float, float]:
            clear_results()
            cpu = cpu_now()
            seconds, report = timed(lambda: services.run_checks(checks, workers=workers))
            assert report.passed == options.checks, [r.reason for r in report.results if not r.succeeded][:3]
            return seconds, cpu_now() - cpu

        runs: dict[str, list[tuple[float, float]]] = {"bare": [], "single": [], "pool": []}
        for _ in range(options.rounds):
            runs["bare"].append(bare_loop(server.url, options.checks))
            runs["single"].append(kong(0))
            runs["pool"].append(kong(options.workers))
        best = {name: min(results) for name, results in runs.items()}
        rate = {name: options.checks / seconds for name, (seconds, _) in best.items()}
        cpu_ms = {name: cpu / options.checks * 1000 for name, (_, cpu) in best.items()}
        single = rate["single"] / rate["bare"]
        pooled = rate["pool"] / rate["bare"]
        rows = [
            Row(
                id="P2a",
                name=f"{options.checks} checks, 0 ms server, single-process Kong",
                measured=f"{single:.2f}x bare loop",
                goal=f">= {SINGLE_GOAL}x",
                met=single >= SINGLE_GOAL,
                notes=(
                    f"Kong {rate['single']:.0f} checks/s ({cpu_ms['single']:.1f} ms CPU each) vs bare twill "
                    f"{rate['bare']:.0f} checks/s ({cpu_ms['bare']:.1f} ms CPU each); best of {options.rounds}"
                ),
                extra={"rates": rate, "cpu_ms": cpu_ms},
            ),
            Row(
                id="P2b",
                name=f"{options.checks} checks, 0 ms server, Kong pool of {options.workers}",
                measured=f"{pooled:.2f}x bare loop",
                goal=f">= {POOL_GOAL}x",
                met=pooled >= POOL_GOAL,
                notes=(
                    f"Kong pool {rate['pool']:.0f} checks/s ({cpu_ms['pool']:.1f} ms CPU each, parent and "
                    f"workers) vs bare twill {rate['bare']:.0f} checks/s in one process"
                ),
            ),
        ]
        for row, workers in zip(rows, (0, options.workers), strict=True):
            profile_if_missed(row, lambda workers=workers: kong(workers))
    emit(rows, options.json, "Kong benchmark P2: CPU-bound checks")


if __name__ == "__main__":
    main()
