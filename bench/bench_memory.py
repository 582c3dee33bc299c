"""P4: memory per worker with Django loaded.

Starts a Kong pool of ``--workers`` (64) processes from a Django process,
runs two checks per worker against a 1 s server (so that every worker is
forked before the first check ends), then reads /proc/PID/smaps_rollup:

- USS (private clean + private dirty): what each worker costs on its own;
- PSS summed over the parent and all workers: what the whole pool costs,
  shared pages counted once.

Side by side: the same pool forked "cold" (no warm-up, no gc.freeze), to
show what forking after the warm-up saves. Goals: USS <= 15 MiB per worker;
64 workers <= 1 GiB in total.

    python bench/bench_memory.py [--workers 64] [--json]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from common import LatencyServer, Row, emit, memory_kib, setup_django

PER_WORKER_GOAL_MIB = 15.0
TOTAL_GOAL_MIB = 1024.0


def measure(url: str, workers: int, *, cold: bool = False) -> dict[str, Any]:
    """Run 2 checks per worker in a fresh pool; return memory figures in MiB."""
    from kong.engine import pool, runner
    from kong.engine.runner import Job
    from kong.engine.scripts import validate

    saved = (runner._warmed_up, gc.freeze)
    if cold:  # what the pool did before tuning: no warm-up, heap not frozen
        runner._warmed_up, gc.freeze = True, (lambda: None)
    try:
        script = validate(f'go {url}\ncode 200\nfind "Latest News"')
        jobs = [Job(key=n, label="bench", script=script, timeout=30, request_timeout=30) for n in range(workers * 2)]
        with pool.WorkerPool(workers) as workers_pool:
            statuses = {outcome.status for _, outcome in workers_pool.run(jobs)}
            assert statuses == {"passed"}, statuses
            figures = [memory_kib(worker.pid) for worker in workers_pool.workers]
            parent = memory_kib(os.getpid())
    finally:
        runner._warmed_up, gc.freeze = saved
    uss = [figure["Uss"] / 1024 for figure in figures]
    return {
        "workers": len(figures),
        "uss_mean": statistics.mean(uss),
        "uss_max": max(uss),
        "uss_total": sum(uss),
        "pss_total": (sum(figure["Pss"] for figure in figures) + parent["Pss"]) / 1024,
        "rss_worker": statistics.mean(figure["Rss"] for figure in figures) / 1024,
        "rss_parent": parent["Rss"] / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir, LatencyServer(1.0) as server:
        setup_django(Path(workdir))
        cold = measure(server.url, options.workers, cold=True)
        warm = measure(server.url, options.workers)
    rows = [
        Row(
            id="P4a",
            name=f"USS per worker, Django loaded ({warm['workers']} workers)",
            measured=f"{warm['uss_mean']:.1f} MiB (max {warm['uss_max']:.1f})",
            goal=f"<= {PER_WORKER_GOAL_MIB:.0f} MiB",
            met=warm["uss_max"] <= PER_WORKER_GOAL_MIB,
            notes=(
                f"forked cold (no warm-up, no gc.freeze): {cold['uss_mean']:.1f} MiB; each worker maps "
                f"{warm['rss_worker']:.0f} MiB RSS, mostly shared with the {warm['rss_parent']:.0f} MiB parent"
            ),
            extra={"warm": warm, "cold": cold},
        ),
        Row(
            id="P4b",
            name=f"{warm['workers']} workers in total",
            measured=f"{warm['pss_total']:.0f} MiB PSS",
            goal=f"<= {TOTAL_GOAL_MIB:.0f} MiB",
            met=warm["pss_total"] <= TOTAL_GOAL_MIB and warm["uss_total"] <= TOTAL_GOAL_MIB,
            notes=(
                f"parent + workers, shared pages counted once; workers' own pages (USS) sum to "
                f"{warm['uss_total']:.0f} MiB (cold: {cold['pss_total']:.0f} MiB PSS)"
            ),
        ),
    ]
    emit(rows, options.json, "Kong benchmark P4: memory per worker")


if __name__ == "__main__":
    main()
