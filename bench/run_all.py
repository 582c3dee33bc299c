"""Run Kong's benchmarks (P1, P1s, P2, P4, P5, T) and print one table: ``make bench``.

Each benchmark runs in a process of its own (so one's heap or pool cannot
skew another's) and reports JSON rows; this prints them together with the
machine's core count and load, then the profile of any goal not met.
Benchmarks print measured figures and ratios; they never fail the build.

    python bench/run_all.py [--quick]
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    ("bench_nagios.py", []),
    ("bench_scheduler.py", []),
    ("bench_cpu.py", []),
    ("bench_memory.py", []),
    ("bench_due_tick.py", []),
    ("bench_tasks.py", []),
]
QUICK = {  # a smoke run of the same code paths, for trying changes
    "bench_nagios.py": ["--checks", "1000", "200", "--rounds", "1"],
    "bench_scheduler.py": ["--checks", "1000", "--rounds", "1"],
    "bench_cpu.py": ["--checks", "200", "--rounds", "1"],
    "bench_memory.py": ["--workers", "16"],
    "bench_due_tick.py": ["--checks", "2000", "--repeat", "3"],
    "bench_tasks.py": ["--checks", "200"],
}


def main() -> int:
    quick = "--quick" in sys.argv[1:]
    started = time.perf_counter()
    rows: list[dict[str, object]] = []
    for script, args in BENCHMARKS:
        extra = QUICK[script] if quick else args
        print(f"running {script} {' '.join(extra)}".rstrip(), file=sys.stderr, flush=True)
        out = subprocess.run(
            [sys.executable, str(HERE / script), *extra, "--json"], capture_output=True, text=True, check=False
        )
        if out.returncode:
            rows.append({"id": "?", "name": script, "measured": "failed", "goal": "", "met": False,
                         "notes": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "", "profile": ""})  # fmt: skip
            continue
        rows.extend(json.loads(out.stdout.strip().splitlines()[-1]))
    print_table(rows, time.perf_counter() - started)
    return 0


def print_table(rows: list[dict[str, object]], seconds: float) -> None:
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\nKong benchmarks: {os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}, "
          f"load average {load}, {seconds:.0f} s in all\n")  # fmt: skip
    print("| id | benchmark | measured | goal | met | side by side |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        met = {True: "yes", False: "**no**", None: "-"}[row["met"]]  # type: ignore[index]
        print(f"| {row['id']} | {row['name']} | {row['measured']} | {row['goal']} | {met} | {row['notes']} |")
    for row in rows:
        if row.get("profile"):
            print(f"\nWhy {row['id']} is not met (cProfile of one Kong run; the parent process):\n{row['profile']}")


if __name__ == "__main__":
    sys.exit(main())
