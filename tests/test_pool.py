"""kong.pool tuning: lazy spawning, fork preparation, long-lived pools, many workers.

(The timeout and crash layers are covered in tests/test_runner.py.)
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.db import connection

from kong import pool, runner
from kong.runner import Job
from kong.scripts import validate


def job(body: str, key: object, *, timeout: float = 30) -> Job:
    return Job(key=key, label=str(key), script=validate(body), timeout=timeout, request_timeout=timeout)


def private_kib(pid: int) -> int:
    """Pages only this process holds (USS), from /proc/PID/smaps_rollup."""
    with open(f"/proc/{pid}/smaps_rollup") as smaps:
        return sum(
            int(line.split()[1]) for line in smaps if line.startswith(("Private_Clean", "Private_Dirty"))
        )


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as smaps:
        return next(int(line.split()[1]) for line in smaps if line.startswith("Rss:"))


def test_workers_start_lazily_and_only_as_many_as_there_is_work(web):
    with pool.WorkerPool(8) as workers:
        assert workers.spawned == 0
        outcomes = list(workers.run([job(f"go {web.url()}", key=n) for n in range(3)]))
        assert workers.spawned == 3
    assert [outcome.status for _, outcome in outcomes] == ["passed"] * 3


def test_run_jobs_sizes_the_pool_to_the_work(web):
    outcomes = list(pool.run_jobs([job(f"go {web.url()}", key=1)], 64))
    assert [outcome.status for _, outcome in outcomes] == ["passed"]
    assert list(pool.run_jobs([], 64)) == []


def test_submit_and_poll_feed_a_long_lived_pool(web):
    web.route("/slow", delay=0.5)
    with pool.WorkerPool(2) as workers:
        assert workers.poll(0.1) == []  # nothing in flight: returns at once
        for key in range(3):
            workers.submit(job(f"go {web.url('/slow')}", key=key))
        assert workers.in_flight == 3
        assert len(workers.pending) == 1
        done = []
        while workers.in_flight:
            done += workers.poll(1.0)
        assert sorted(item.key for item, _ in done) == [0, 1, 2]
        assert workers.spawned == 2  # the third job reused a worker


def test_cancel_kills_checks_in_flight_and_returns_the_jobs_without_outcomes(web):
    web.route("/slow", delay=30)
    with pool.WorkerPool(1) as workers:
        workers.submit(job(f"go {web.url('/slow')}", key="running"))
        workers.submit(job(f"go {web.url()}", key="queued"))
        while not web.hits.get("/slow"):
            time.sleep(0.02)
        pids = [worker.pid for worker in workers.workers]
        assert sorted(item.key for item in workers.cancel()) == ["queued", "running"]
        assert workers.in_flight == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_worker_ignores_sigterm_so_the_parent_decides_what_happens_to_its_check(web):
    web.route("/slow", delay=1.0)
    with pool.WorkerPool(1) as workers:
        workers.submit(job(f"go {web.url('/slow')}\nfind 'Latest News'", key="check"))
        while not web.hits.get("/slow"):
            time.sleep(0.02)
        os.kill(workers.workers[0].pid, signal.SIGTERM)  # as systemd does to a whole unit
        done = []
        while workers.in_flight:
            done += workers.poll(1.0)
    assert [outcome.status for _, outcome in done] == ["passed"]


@pytest.mark.django_db(transaction=True)
def test_db_connections_are_closed_and_the_check_path_warmed_up_before_forking(web, monkeypatch):
    monkeypatch.setattr(runner, "_warmed_up", False)
    connection.ensure_connection()
    assert connection.connection is not None
    with pool.WorkerPool(1) as workers:
        list(workers.run([job(f"go {web.url()}", key=1)]))
    assert connection.connection is None  # closed before the fork; reopened on next use
    assert runner._warmed_up
    assert runner.tls_context(True) is runner.tls_context(True)


def test_workers_share_the_parents_pages(web):
    with pool.WorkerPool(4) as workers:
        list(workers.run([job(f"go {web.url()}\nfind 'Latest News'", key=n) for n in range(8)]))
        private = [private_kib(worker.pid) for worker in workers.workers]
        resident = [rss_kib(worker.pid) for worker in workers.workers]
    # A worker resides in as much memory as the parent, but owns only a small part of it.
    assert all(own < total / 3 for own, total in zip(private, resident, strict=True)), (private, resident)


def test_sixty_four_workers_on_a_small_machine(web):
    web.route("/slow", delay=0.5)
    jobs = [job(f"go {web.url('/slow')}\nfind 'Latest News'", key=n) for n in range(64)]
    with pool.WorkerPool(64, max_checks_per_worker=1) as workers:
        outcomes = [outcome.status for _, outcome in workers.run(jobs)]
        assert workers.spawned == 64
        assert workers.workers == []  # each retired after its one check
    assert outcomes == ["passed"] * 64
    assert web.hits["/slow"] == 64
