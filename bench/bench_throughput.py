"""P1: I/O-bound throughput. 400 checks against a server that adds 200 ms to
every request, through a pool of 64 workers, end to end (render, validate,
run, record), as ``check_sites --workers 64`` runs them.

Side by side in the same run: a sequential Kong run of a sample (``--workers
0``), and a bare ``multiprocessing`` pool of 64 processes running the same
script with raw twill (bench/bare_twill.py). Goal: at least 200 checks/s.

    python bench/bench_throughput.py [--checks 400] [--workers 64] [--latency 0.2] [--json]
"""

from __future__ import annotations

import argparse
import json
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

GOAL = 200.0  # checks per second


def bare_pool(url: str, count: int, workers: int) -> float:
    """Seconds for raw twill in a bare process pool (no Kong, no Django)."""
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bare_twill.py"), "pool", "--url", url,
         "--count", str(count), "--workers", str(workers)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    result = json.loads(out)
    assert result["passed"] == count, result
    return float(result["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checks", type=int, default=400)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--sample", type=int, default=20, help="checks in the sequential run")
    parser.add_argument("--rounds", type=int, default=2, help="best of this many runs each")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir, LatencyServer(options.latency) as server:
        setup_django(Path(workdir))
        from kong import services

        build_fleet(server.url, options.checks)
        checks = list(services.select_checks())

        def kong_pool() -> float:
            clear_results()
            seconds, report = timed(lambda: services.run_checks(checks, workers=options.workers))
            assert report.passed == options.checks, [r.reason for r in report.results if not r.succeeded][:3]
            return seconds

        kong, bare = [], []
        for _ in range(options.rounds):  # interleaved, so load from elsewhere hits both alike
            kong.append(kong_pool())
            bare.append(bare_pool(server.url, options.checks, options.workers))
        clear_results()
        sample = checks[: options.sample]
        sequential, _ = timed(lambda: services.run_checks(sample, workers=0))

        rate = options.checks / min(kong)
        bare_rate = options.checks / min(bare)
        sequential_rate = len(sample) / sequential
        row = Row(
            id="P1",
            name=f"{options.checks} checks, {options.latency * 1000:.0f} ms server, {options.workers} workers",
            measured=f"{rate:.0f} checks/s",
            goal=f">= {GOAL:.0f} checks/s",
            met=rate >= GOAL,
            notes=(
                f"{rate / sequential_rate:.1f}x a sequential run ({sequential_rate:.1f} checks/s, "
                f"{len(sample)} checks); {rate / bare_rate:.2f}x a bare twill process pool "
                f"({bare_rate:.0f} checks/s); best of {options.rounds}"
            ),
            extra={"rate": rate, "bare_rate": bare_rate, "sequential_rate": sequential_rate},
        )
        profile_if_missed(row, kong_pool)
    emit([row], options.json, "Kong benchmark P1: I/O-bound throughput")


if __name__ == "__main__":
    main()
