"""kong.engine.pool tuning: lazy spawning, fork preparation, long-lived pools, many workers.

(The timeout and crash layers are covered in tests/test_runner.py.)
"""

from __future__ import annotations

import errno
import gc
import os
import re
import signal
import time
from collections.abc import Callable

import pytest
from django.db import connection
from django.test import override_settings

from kong.engine import pool, runner, transport
from kong.engine import workers as worker_process
from kong.engine.runner import Job
from kong.engine.scripts import validate


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
    # A slow page keeps all three checks in flight at once: a worker that
    # finished early would (rightly) be reused instead of forking another.
    web.route("/", delay=1.0)
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
    assert transport.tls_context(True) is transport.tls_context(True)


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


# -- dead workers, failed forks, inherited pipes, memory ---------------------------


def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until it holds (the test runner's timeout bounds it)."""
    while not condition():
        time.sleep(0.01)


def process_state(pid: int) -> str:
    """The one-letter state from /proc (R, S, T stopped, Z exited and unreaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_a_worker_that_died_while_idle_is_replaced_and_the_next_check_passes(web):
    with pool.WorkerPool(1) as workers:
        assert [outcome.status for _, outcome in workers.run([job(f"go {web.url()}", key="first")])] == [
            "passed"
        ]
        (idle,) = workers.workers
        os.kill(idle.pid, signal.SIGKILL)  # as the OOM killer would, between checks
        wait_until(lambda: process_state(idle.pid) in ("Z", "gone"))
        outcomes = list(workers.run([job(f"go {web.url()}\nfind 'Latest News'", key="next")]))
        assert workers.spawned == 2
    assert [(item.key, outcome.status) for item, outcome in outcomes] == [("next", "passed")]


def test_a_worker_that_dies_before_it_begins_its_check_hands_it_to_a_fresh_worker(web):
    with pool.WorkerPool(1) as workers:
        list(workers.run([job(f"go {web.url()}", key="first")]))
        (idle,) = workers.workers
        os.kill(idle.pid, signal.SIGSTOP)  # alive, so it is given the next job, which it cannot read
        wait_until(lambda: process_state(idle.pid) == "T")
        workers.submit(job(f"go {web.url()}\nfind 'Latest News'", key="next"))
        assert idle.job is not None
        os.kill(idle.pid, signal.SIGKILL)
        done = []
        while workers.in_flight:
            done += workers.poll(1.0)
        assert workers.spawned == 2
    assert [(item.key, outcome.status) for item, outcome in done] == [("next", "passed")]


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def quiet_fds() -> set[int]:
    """This process's descriptors once earlier tests' workers, which a pool
    stops without waiting, have exited and the test server has closed their
    connections."""
    give_up = time.monotonic() + 30
    while worker_process._stopped and time.monotonic() < give_up:
        worker_process.reap_stopped()
        time.sleep(0.02)
    seen = open_fds()
    while time.monotonic() < give_up:
        time.sleep(0.2)
        now, seen = seen, open_fds()
        if now == seen:
            break
    return seen


def fds_settle_to(expected: set[int]) -> set[int]:
    """This process's descriptors once the test server's threads have closed
    the connections the workers left (they do so a moment after the workers
    exit); gives up after a generous bound and returns what is open."""
    give_up = time.monotonic() + 30
    while open_fds() != expected and time.monotonic() < give_up:
        time.sleep(0.05)
    return open_fds()


def test_a_failed_fork_leaves_the_job_for_a_worker_that_could_start_and_leaks_nothing(web, monkeypatch):
    real_fork = os.fork
    forks = []

    def fork_once() -> int:
        forks.append(1)
        if len(forks) > 1:
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        return real_fork()

    worker_process.prepare_fork()  # its first call opens what it keeps (caches), not what a fork leaks
    gc.unfreeze()
    before = quiet_fds()
    monkeypatch.setattr(os, "fork", fork_once)
    with pool.WorkerPool(3) as workers:
        outcomes = [
            outcome.status for _, outcome in workers.run([job(f"go {web.url()}", key=n) for n in range(3)])
        ]
        assert workers.spawned == 1
    monkeypatch.undo()
    assert outcomes == ["passed"] * 3
    assert len(forks) >= 2
    assert fds_settle_to(before) == before


def test_when_no_worker_can_be_forked_the_checks_end_as_errors(web, monkeypatch):
    def no_fork() -> int:
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    worker_process.prepare_fork()
    gc.unfreeze()
    before = quiet_fds()
    monkeypatch.setattr(os, "fork", no_fork)
    outcomes = list(pool.run_jobs([job(f"go {web.url()}", key=n) for n in range(2)], 2))
    monkeypatch.undo()
    assert sorted(item.key for item, _ in outcomes) == [0, 1]
    for _, outcome in outcomes:
        assert outcome.status == "error"
        assert (
            outcome.reason == "could not start a worker process: [Errno 11] Resource temporarily unavailable"
        )
    assert fds_settle_to(before) == before
    assert web.hits == {}


def fd_targets(pid: int) -> set[str]:
    """What each descriptor of ``pid`` points at: ``socket:[inode]``, ``pipe:[inode]``."""
    targets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return targets


def test_a_later_worker_does_not_hold_earlier_workers_pipes(web):
    web.route("/slow", delay=0.5)
    with pool.WorkerPool(3) as workers:
        for key in range(3):
            workers.submit(job(f"go {web.url('/slow')}", key=key))
        first, second, last = workers.workers
        wait_until(lambda: web.hits.get("/slow") == 3)  # every worker is running its check
        earlier = {os.readlink(f"/proc/self/fd/{fd}") for w in (first, second)
                   for fd in (w.conn.fileno(), w.process.sentinel)}  # fmt: skip
        assert not earlier & fd_targets(last.pid)
        while workers.in_flight:
            workers.poll(1.0)
        # With its pipe held by no other worker, closing the parent's end is
        # enough for a worker to see end-of-file and exit.
        first.conn.close()
        first.process.join(5)
        assert first.process.exitcode == 0


def address_space_limit(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as limits:
        return int(next(line for line in limits if line.startswith("Max address space")).split()[3])


def address_space(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


MiB = 1024 * 1024


def test_workers_run_under_a_memory_limit_and_running_out_is_an_error_not_the_end_of_the_pool(web):
    hog = Job(key="hog", label="hog", script=validate('run "hog = bytearray(3 * 1024 ** 3)"', safe=False),
              timeout=30, request_timeout=30, safe=False)  # fmt: skip
    with pool.WorkerPool(1, memory_limit=768 * MiB) as workers:
        outcomes = {
            item.key: outcome for item, outcome in workers.run([hog, job(f"go {web.url()}", key="next")])
        }
        (worker,) = workers.workers
        # The limit counts from what the worker inherited from this process.
        limit, inherited = address_space_limit(worker.pid), address_space(os.getpid())
        assert 768 * MiB < limit < inherited + 768 * MiB + 256 * MiB, (limit, inherited)
    assert outcomes["hog"].status == "error"
    assert re.fullmatch(
        r"the check ran out of memory: the worker process reached its [0-9.]+ GiB address-space limit "
        r"\(KONG_WORKER_MEMORY_LIMIT\) at line 1",
        outcomes["hog"].reason,
    ), outcomes["hog"].reason
    assert outcomes["next"].status == "passed"


@override_settings(KONG_WORKER_MEMORY_LIMIT=1024**3)
def test_the_memory_limit_defaults_to_the_setting_and_leaves_room_for_a_page_at_the_size_limit(web):
    # 1.2 million elements just under the 10 MiB page limit: about 350 MiB of parsed tree.
    web.route("/big", payload=b"<p>x</p>" * (9 * MiB // 8))
    with pool.WorkerPool(1) as workers:
        assert workers.memory_limit == 1024**3
        outcomes = [
            outcome for _, outcome in workers.run([job(f"go {web.url('/big')}\nfind x\nshow_forms", key=1)])
        ]
        assert address_space_limit(workers.workers[0].pid) > 1024**3
    assert outcomes[0].status == "passed", outcomes[0].reason
    assert pool.WorkerPool(1, memory_limit=None).memory_limit == 0


def test_a_check_whose_workers_keep_dying_before_it_begins_is_given_up_as_an_error(monkeypatch):
    def broken_worker(*args: object) -> None:  # a worker that cannot even start, whatever the cause
        os._exit(1)

    monkeypatch.setattr(pool, "worker_main", broken_worker)
    with pool.WorkerPool(1) as workers:
        ((_, outcome),) = list(workers.run([job("echo hello", key="doomed")]))
        assert workers.spawned == pool.MAX_START_ATTEMPTS
    assert outcome.status == "error"
    assert (
        outcome.reason
        == "could not start the check: the worker process exited with code 1 before it began, 3 times"
    )
