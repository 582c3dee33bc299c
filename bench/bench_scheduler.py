"""P1s: ``kong_scheduler`` keeping a pool of 64 workers busy.

Method: ``--checks`` checks (default 4,000) of a ``* * * * *`` test, all due
at once, against a server that adds 200 ms to every request. A real
``python -m django kong_scheduler --workers 64 --tick 1`` process works
through them while this process counts the recorded results (a read on
the WAL database every 0.1 s). The steady part of the run is the time
between 10% and 90% of the results being recorded: that excludes the
start-up (interpreter, Django, sync, the first fork of the pool) and the
tail (the last wave of checks, which cannot fill the pool). Goal: the
steady rate >= 0.85x the latency limit (64 workers / 0.2 s = 320 checks/s).
The rate from the process start to the last result is printed too.

    python bench/bench_scheduler.py [--checks 4000] [--workers 64] [--json]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, LatencyServer, Row, build_fleet, emit, manage_env, setup_django

GOAL = 0.85
STEADY = (0.10, 0.90)  # the share of results between which the rate is measured


def scheduler_command(workers: int) -> list[str]:
    return [sys.executable, "-m", "django", "kong_scheduler", "--workers", str(workers), "--tick", "1",
            "--no-prune", "--grace", "0", "--verbosity", "0", "--settings=bench.settings"]  # fmt: skip


def run_scheduler(workdir: Path, workers: int, count: int, limit_seconds: float) -> list[tuple[float, int]]:
    """Start the scheduler; return (seconds since its start, results recorded) samples until all are in."""
    from kong.models import TestResult

    before = TestResult.objects.count()
    started = time.perf_counter()
    process = subprocess.Popen(scheduler_command(workers), cwd=REPO, env=manage_env(workdir))
    samples = [(0.0, 0)]
    try:
        while samples[-1][1] < count and time.perf_counter() - started < limit_seconds:
            time.sleep(0.1)
            samples.append((time.perf_counter() - started, TestResult.objects.count() - before))
            if process.poll() is not None:
                raise RuntimeError(f"kong_scheduler exited with {process.returncode}")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return samples


def when(samples: list[tuple[float, int]], reached: float) -> float:
    """The first time at least ``reached`` results were in (interpolated between samples)."""
    previous = samples[0]
    for sample in samples:
        if sample[1] >= reached:
            (t0, n0), (t1, n1) = previous, sample
            return t0 + (t1 - t0) * (reached - n0) / max(1, n1 - n0)
        previous = sample
    return samples[-1][0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checks", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=2, help="best of this many runs")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    limit = options.workers / options.latency

    with tempfile.TemporaryDirectory() as tmp, LatencyServer(options.latency) as server:
        workdir = Path(tmp)
        setup_django(workdir)
        build_fleet(server.url, options.checks)
        from kong.models import Check, Test

        Test.objects.update(schedule="* * * * *")
        runs = []
        for _ in range(options.rounds):
            Check.objects.update(next_due_at=None, last_run_at=None, claimed_until=None, claim_token="")
            samples = run_scheduler(workdir, options.workers, options.checks, 30 + options.checks / 20)
            low, high = (options.checks * share for share in STEADY)
            steady = (high - low) / max(1e-9, when(samples, high) - when(samples, low))
            overall = samples[-1][1] / samples[-1][0]
            runs.append((steady, overall, samples[-1][1]))
        steady, overall, recorded = max(runs)
    row = Row(
        id="P1s",
        name=f"kong_scheduler, {options.checks:,} checks due at once, {options.latency * 1000:.0f} ms, "
        f"{options.workers} workers",
        measured=f"{steady / limit:.2f}x limit",
        goal=f">= {GOAL}x limit",
        met=steady / limit >= GOAL and recorded >= options.checks,
        notes=(
            f"steady {steady:.0f} checks/s (between {STEADY[0]:.0%} and {STEADY[1]:.0%} recorded) of the "
            f"{limit:.0f} checks/s latency limit; start to last result {overall:.0f} checks/s; "
            f"{recorded:,} of {options.checks:,} recorded; best of {options.rounds}"
        ),
        extra={"steady": steady, "overall": overall, "limit": limit},
    )
    emit([row], options.json, "Kong benchmark P1s: kong_scheduler keeping 64 workers busy")


if __name__ == "__main__":
    main()
