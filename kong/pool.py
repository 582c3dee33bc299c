"""Run many checks concurrently in reused worker processes, with hard timeouts.

twill's state is process-global, so threads are out: each worker is a
process that runs one check at a time. Checks mostly wait on the network, so
a pool may be far larger than the CPU count (64 workers on 2 cores is fine).

Keeping workers small and cheap to start:

- workers are forked from the parent after Django, twill and the TLS context
  are loaded and one throw-away check has warmed every code path up
  (``runner.warm_up``), so each worker shares those pages instead of
  building its own copy;
- before forking, DB connections are closed (a child must never share the
  parent's socket) and the heap is collected once and frozen
  (``gc.freeze``), so a child's garbage collector does not write to, and
  so copy, the shared pages;
- workers start lazily, only when there is work for them, and are replaced
  after ``max_checks_per_worker`` checks so slow leaks cannot grow.

Three timeout layers protect a run: httpx's per-request timeout and the
soft alarm live in ``kong.runner``; here the parent SIGKILLs a worker that
overruns its check's timeout by ``kill_grace`` seconds and replaces it. A
worker that dies for any reason yields a ``crashed`` outcome, and the run
goes on.

Workers never touch the database: they receive plain ``Job`` objects and
send back plain ``Outcome`` objects; the parent records them.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from kong import runner
from kong.runner import CheckTimeout, Job, Outcome

_fork = multiprocessing.get_context("fork")

# How much lower the workers' CPU priority is than the parent's (see _worker_main).
WORKER_NICENESS = 5


class _ForkedProcess:
    """The slice of ``multiprocessing.Process`` the pool needs, on a bare
    ``os.fork()``. It starts a worker in about half the parent's time
    (multiprocessing's bookkeeping doubles the cost of a fork), and it has no
    interpreter-exit hook that signals workers and then waits for them.

    ``sentinel`` is a pipe the child holds open: it reads as end-of-file once
    the child has exited, so ``multiprocessing.connection.wait`` can watch it.
    """

    def __init__(self, target: Callable[..., None], args: tuple[Any, ...]) -> None:
        sentinel, held_by_child = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: never return into the parent's code
            code = 1
            try:
                os.close(sentinel)
                target(*args)
                code = 0
            finally:
                os._exit(code)
        os.close(held_by_child)
        self.pid = pid
        self.sentinel = sentinel
        self.exitcode: int | None = None

    def is_alive(self) -> bool:
        self._reap(block=False)
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        if self.exitcode is None and wait([self.sentinel], timeout):
            self._reap(block=True)

    def kill(self) -> None:
        if self.is_alive():
            os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """Release the sentinel; a child still running is killed and reaped first."""
        if self.exitcode is None:
            self.kill()
            self._reap(block=True)
        if self.sentinel >= 0:
            os.close(self.sentinel)
            self.sentinel = -1

    def _reap(self, *, block: bool) -> None:
        if self.exitcode is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere
            self.exitcode = -signal.SIGKILL
            return
        if pid:
            self.exitcode = os.waitstatus_to_exitcode(status)


@dataclass
class _Worker:
    process: _ForkedProcess
    conn: Connection
    job: Job | None = None
    started: float = 0.0
    deadline: float = 0.0
    done: int = 0
    pid: int = field(init=False)

    def __post_init__(self) -> None:
        self.pid = self.process.pid


class WorkerPool:
    """A pool of forked twill workers.

    Two ways to use it, both as a context manager so workers are reaped:

    - ``run(jobs)`` yields ``(job, outcome)`` pairs as checks finish, in
      completion order, until every job is done;
    - ``submit(job)`` and ``poll(timeout)`` feed a long-lived pool (the
      scheduler): ``poll`` returns the pairs that finished within
      ``timeout`` seconds. ``cancel()`` kills checks in flight and returns
      the jobs that did not finish.
    """

    def __init__(
        self,
        size: int,
        *,
        kill_grace: float = 5.0,
        max_checks_per_worker: int = 0,
    ) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one worker")
        self.size = size
        self.kill_grace = kill_grace
        self.max_checks_per_worker = max_checks_per_worker
        self.workers: list[_Worker] = []
        self.pending: deque[Job] = deque()
        self.spawned = 0

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def in_flight(self) -> int:
        """Jobs submitted and not yet returned by ``poll``."""
        return len(self.pending) + len(self._busy())

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, Outcome]]:
        self.pending.extend(jobs)
        try:
            while self.in_flight:
                yield from self.poll(None)
        finally:
            if self._busy():  # abandoned mid-run (Ctrl-C, SIGTERM): kill in-flight checks
                self.cancel()

    def submit(self, job: Job) -> None:
        """Queue ``job``; it starts as soon as a worker is free."""
        self.pending.append(job)
        self._dispatch()

    def poll(self, timeout: float | None) -> list[tuple[Job, Outcome]]:
        """Start queued jobs, then wait up to ``timeout`` seconds (None: until
        something finishes) and return the ``(job, outcome)`` pairs that
        finished, including timeouts and crashes. Returns at once when
        nothing is in flight."""
        self._dispatch()
        if not self._busy():
            return []
        finished = list(self._collect(timeout))
        self._dispatch()
        return finished

    def cancel(self) -> list[Job]:
        """Kill the checks in flight and drop the queue; returns those jobs,
        none of which has an outcome."""
        dropped = [worker.job for worker in self._busy() if worker.job is not None]
        for worker in self._busy():
            self._kill(worker)
        dropped.extend(self.pending)
        self.pending.clear()
        return dropped

    def close(self) -> None:
        """Stop every worker: idle ones are asked to exit, all at once (one
        by one, 64 workers would take a quarter of a second); busy ones are
        killed."""
        for worker in self._busy():
            self._kill(worker)
        idle = list(self.workers)
        for worker in idle:
            try:
                worker.conn.send(None)
            except (BrokenPipeError, EOFError, OSError):
                pass
        deadline = time.monotonic() + 2
        for worker in idle:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(2)
            self._discard(worker)

    # -- internals -------------------------------------------------------

    def _busy(self) -> list[_Worker]:
        return [worker for worker in self.workers if worker.job is not None]

    def _dispatch(self) -> None:
        for worker in self.workers:
            if not self.pending:
                return
            if worker.job is None:
                self._assign(worker, self.pending.popleft())
        wanted = min(len(self.pending), self.size - len(self.workers))
        if wanted > 0:
            self._spawn(wanted)

    def _assign(self, worker: _Worker, job: Job) -> None:
        worker.job = job
        worker.started = time.monotonic()
        worker.deadline = worker.started + job.timeout + self.kill_grace
        try:
            worker.conn.send(job)
        except (BrokenPipeError, EOFError, OSError):
            pass  # the worker is gone; _collect sees its sentinel and reports it

    def _collect(self, timeout: float | None) -> Iterator[tuple[Job, Outcome]]:
        busy = self._busy()
        wait_for = max(0.0, min(worker.deadline for worker in busy) - time.monotonic())
        if timeout is not None:
            wait_for = min(wait_for, timeout)
        ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], wait_for))
        now = time.monotonic()
        for worker in busy:
            job = worker.job
            assert job is not None
            if worker.conn in ready or worker.process.sentinel in ready:
                outcome = self._receive(worker)
            elif now >= worker.deadline:
                self._kill(worker)
                outcome = Outcome(
                    "timeout",
                    (now - worker.started) * 1000,
                    f"timed out after {job.timeout:g} s; the worker was killed",
                )
            else:
                continue
            outcome.duration_ms = round(outcome.duration_ms, 1)
            worker.job = None
            worker.done += 1
            if self.max_checks_per_worker and worker.done >= self.max_checks_per_worker:
                self._retire(worker)
            yield job, outcome

    def _receive(self, worker: _Worker) -> Outcome:
        try:
            if worker.conn.poll():
                outcome = worker.conn.recv()
                if isinstance(outcome, Outcome):
                    return outcome
        except (EOFError, OSError):
            pass
        worker.process.join(1)
        code = worker.process.exitcode
        if code is None:  # alive but its pipe is broken or garbled: never leave an orphan
            self._kill(worker)
            code = worker.process.exitcode
        else:
            self._discard(worker)
        if code is not None and code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with code {code}"
        return Outcome(
            "crashed",
            (time.monotonic() - worker.started) * 1000,
            f"the worker process {how} while running the check",
        )

    def _spawn(self, count: int) -> None:
        """Fork ``count`` workers, preparing the parent once for all of them,
        and hand each its first job at once: the first workers are already
        waiting on the network while the last ones are forked."""
        _prepare_fork()
        try:
            for _ in range(count):
                parent_conn, child_conn = _fork.Pipe()
                process = _ForkedProcess(_worker_main, (child_conn, parent_conn))
                child_conn.close()
                worker = _Worker(process=process, conn=parent_conn)
                self.workers.append(worker)
                self.spawned += 1
                self._assign(worker, self.pending.popleft())
        finally:
            gc.unfreeze()  # the children keep the frozen heap; the parent collects as usual

    def _kill(self, worker: _Worker) -> None:
        if worker.process.is_alive():
            os.kill(worker.pid, signal.SIGKILL)
        worker.process.join(5)
        worker.job = None
        self._discard(worker)

    def _retire(self, worker: _Worker) -> None:
        try:
            worker.conn.send(None)
        except (BrokenPipeError, EOFError, OSError):
            pass
        worker.process.join(2)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(2)
        self._discard(worker)

    def _discard(self, worker: _Worker) -> None:
        worker.conn.close()
        worker.process.close()
        if worker in self.workers:
            self.workers.remove(worker)


def run_jobs(jobs: Iterable[Job], workers: int, **pool_options: Any) -> Iterator[tuple[Job, Outcome]]:
    """Run jobs in a pool of ``workers`` processes, or inline when ``workers`` is 0."""
    if workers <= 0:
        for job in jobs:
            yield job, runner.execute(job)
        return
    jobs = list(jobs)
    if not jobs:
        return
    with WorkerPool(min(workers, len(jobs)), **pool_options) as pool:
        yield from pool.run(jobs)


def _prepare_fork() -> None:
    """Make forking cheap and safe: warm the check path up (once per
    process), drop DB connections the child must not inherit, then collect
    and freeze the heap so children share its pages.

    The first time, a full collection drops the warm-up's garbage; later
    (a long-lived pool replacing one worker at a time) only the young
    generations are collected, which takes microseconds, not tens of ms.
    """
    global _collected
    runner.warm_up()
    try:
        from django.db import connections

        for connection in connections.all(initialized_only=True):
            if not connection.in_atomic_block:
                connection.close()
    except Exception:  # Django not configured: nothing to close
        pass
    gc.collect(generation=2 if not _collected else 1)
    _collected = True
    gc.freeze()


_collected = False


def _worker_main(conn: Connection, parent_end: Connection) -> None:
    parent_end.close()
    # Ctrl-C (SIGINT) and a service manager's SIGTERM to the whole process
    # group are the parent's to handle: it finishes or cancels the checks
    # and decides what is recorded. The parent stops workers with SIGKILL.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The parent is the one serial step (it builds, dispatches and records
    # every check); with dozens of busy workers on a few cores it would get
    # a sliver of CPU and become the bottleneck. Workers yield to it.
    try:
        os.nice(WORKER_NICENESS)
    except OSError:
        pass
    _forget_db_connections()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if job is None:
            return
        try:
            outcome = runner.execute(job)
        except CheckTimeout:  # the alarm fired between the script and its cleanup
            outcome = Outcome("timeout", job.timeout * 1000, f"timed out after {job.timeout:g} s")
        except BaseException as error:  # report, never die silently
            outcome = Outcome("crashed", 0, f"the worker failed: {type(error).__name__}: {error}")
        try:
            conn.send(outcome)
        except (BrokenPipeError, OSError):
            return


def _forget_db_connections() -> None:
    """A forked child must not use (or close) the parent's DB sockets."""
    try:
        from django.db import connections

        for connection in connections.all(initialized_only=True):
            connection.connection = None
    except Exception:
        pass
