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
  after ``max_checks_per_worker`` checks so slow leaks cannot grow;
- forking a worker from a Django process takes 5 to 15 ms, so 64 of them
  take most of a second: the pool forks only while no finished check is
  waiting, and collects (and hands out the next job) in between, so the
  first workers never idle while the last ones are forked;
- stopping idle workers does not wait for them to exit: they are killed
  (they hold nothing) and reaped later, so a run's end is not held up by
  64 processes tearing down their address spaces.

Three timeout layers protect a run: httpx's per-request timeout and the
soft alarm live in ``kong.engine.runner``; here the parent SIGKILLs a worker that
overruns its check's timeout by ``kill_grace`` seconds and replaces it. A
worker that dies while running a check yields a ``crashed`` outcome, and the
run goes on. A worker that died while idle, or before it began its check, is
replaced and the check goes to a fresh worker: it is not that check's fault.
Each worker's address space is capped (``memory_limit`` beyond what it
inherits, RLIMIT_AS), so a runaway page or script ends in a MemoryError
inside that worker, never in the host's OOM killer. When no worker can be forked at all (EAGAIN,
ENOMEM), the checks end as ``error`` outcomes instead of the run raising.

Workers never touch the database: they receive plain ``Job`` objects and
send back plain ``Outcome`` objects; the parent records them.
"""

from __future__ import annotations

import gc
import mmap
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from kong.engine import runner
from kong.engine.runner import Job, Outcome
from kong.engine.workers import (
    ForkedProcess,
    memory_limit_setting,
    prepare_fork,
    read_count,
    reap_stopped,
    worker_main,
)
from kong.status import Status

_fork = multiprocessing.get_context("fork")

MAX_START_ATTEMPTS = 3

# ``memory_limit`` default: read KONG_WORKER_MEMORY_LIMIT when the pool is made.
FROM_SETTINGS: Any = object()


@dataclass
class _Worker:
    process: ForkedProcess
    conn: Connection
    # A page shared with the worker, where it counts the jobs it has taken
    # from its pipe: it tells a check that never began from one that crashed.
    began: mmap.mmap
    job: Job | None = None
    started: float = 0.0
    deadline: float = 0.0
    sent: int = 0
    done: int = 0
    pid: int = field(init=False)

    def __post_init__(self) -> None:
        self.pid = self.process.pid

    def began_its_job(self) -> bool:
        """Whether the worker took its current job from the pipe."""
        return read_count(self.began) >= self.sent


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
        memory_limit: int | None = FROM_SETTINGS,
    ) -> None:
        """``memory_limit``: the bytes of address space each worker may map
        beyond what it inherits at fork (RLIMIT_AS); 0 or None for no limit;
        by default KONG_WORKER_MEMORY_LIMIT."""
        if size < 1:
            raise ValueError("a pool needs at least one worker")
        self.size = size
        self.kill_grace = kill_grace
        self.max_checks_per_worker = max_checks_per_worker
        self.memory_limit = memory_limit_setting() if memory_limit is FROM_SETTINGS else (memory_limit or 0)
        self.workers: list[_Worker] = []
        self.pending: deque[Job] = deque()
        self.spawned = 0
        # Checks that ended without a worker (none could start), for the next poll.
        self.finished: list[tuple[Job, Outcome]] = []
        # id(job) -> how many workers died before beginning it.
        self._start_failures: dict[int, int] = {}
        # A finished check is waiting to be collected: fork no more until it is.
        self._results_waiting = False
        # The last fork failed (EAGAIN, ENOMEM): wait for workers, do not spin.
        self._fork_failed = False

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def in_flight(self) -> int:
        """Jobs submitted and not yet returned by ``poll``."""
        return len(self.pending) + len(self._busy()) + len(self.finished)

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
        finished, self.finished = self.finished, []
        if self._busy():
            forking = bool(self.pending) and len(self.workers) < self.size and not self._fork_failed
            finished.extend(self._collect(0 if finished or forking else timeout))
            self._dispatch()
        finished.extend(self.finished)
        self.finished = []
        return finished

    def cancel(self) -> list[Job]:
        """Kill the checks in flight and drop the queue; returns those jobs,
        none of which has an outcome."""
        dropped = [worker.job for worker in self._busy() if worker.job is not None]
        for worker in self._busy():
            self._kill(worker)
        dropped.extend(self.pending)
        self.pending.clear()
        self._start_failures.clear()
        return dropped

    def close(self) -> None:
        """Stop every worker: busy ones are killed and reaped; idle ones,
        which hold nothing, are killed all at once and reaped later
        (``reap_stopped``), so that the caller does not wait for 64
        processes to tear down their address spaces."""
        for worker in self._busy():
            self._kill(worker)
        for worker in list(self.workers):
            worker.process.stop()
            self._discard(worker)
        reap_stopped()

    # -- internals -------------------------------------------------------

    def _busy(self) -> list[_Worker]:
        return [worker for worker in self.workers if worker.job is not None]

    def _dispatch(self) -> None:
        for worker in list(self.workers):
            if not self.pending:
                return
            if worker.job is None:
                if not worker.process.is_alive():
                    # It died while idle (the OOM killer, an admin): replace it
                    # rather than blame the next, unrelated check.
                    self._discard(worker)
                    continue
                self._assign(worker, self.pending.popleft())
        wanted = min(len(self.pending), self.size - len(self.workers))
        if wanted > 0 and not self._waiting():
            self._spawn(wanted)

    def _waiting(self) -> bool:
        """Whether a busy worker has finished (or died) and waits to be collected."""
        if not self._results_waiting:
            busy = self._busy()
            self._results_waiting = bool(busy) and bool(
                wait([w.conn for w in busy] + [w.process.sentinel for w in busy], 0)
            )
        return self._results_waiting

    def _assign(self, worker: _Worker, job: Job) -> None:
        worker.job = job
        worker.started = time.monotonic()
        worker.deadline = worker.started + job.timeout + self.kill_grace
        worker.sent += 1
        try:
            worker.conn.send(job)
        except (BrokenPipeError, EOFError, OSError):
            # Gone before the check began: a fresh worker takes it.
            self._kill(worker)
            self._requeue(job, "its worker process had exited")

    def _requeue(self, job: Job, why: str) -> None:
        """Put ``job``, which never began, back at the head of the queue,
        unless workers keep dying before beginning it: then it ends as an
        error."""
        failures = self._start_failures.get(id(job), 0) + 1
        self._start_failures[id(job)] = failures
        if failures < MAX_START_ATTEMPTS:
            self.pending.appendleft(job)
            return
        self._start_failures.pop(id(job), None)
        reason = f"could not start the check: {why} before it began, {failures} times"
        self.finished.append((job, Outcome(Status.ERROR, 0, reason)))

    def _collect(self, timeout: float | None) -> Iterator[tuple[Job, Outcome]]:
        self._results_waiting = False
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
                if outcome is None:  # the worker died before it began the check
                    continue
            elif now >= worker.deadline:
                self._kill(worker)
                outcome = Outcome(
                    Status.TIMEOUT,
                    (now - worker.started) * 1000,
                    f"timed out after {job.timeout:g} s; the worker was killed",
                )
            else:
                continue
            outcome.duration_ms = round(outcome.duration_ms, 1)
            worker.job = None
            worker.done += 1
            self._start_failures.pop(id(job), None)
            if self.max_checks_per_worker and worker.done >= self.max_checks_per_worker:
                self._retire(worker)
            yield job, outcome

    def _receive(self, worker: _Worker) -> Outcome | None:
        """The outcome ``worker`` sent; a ``crashed`` one when it died or
        broke its pipe mid-check; None when it died before it began the
        check, which is then queued again."""
        try:
            if worker.conn.poll():
                outcome = worker.conn.recv()
                if isinstance(outcome, Outcome):
                    return outcome
        except (EOFError, OSError):
            pass
        job = worker.job
        if job is not None and not worker.began_its_job():
            self._kill(worker)
            self._requeue(job, f"the worker process {self._how(worker)}")
            return None
        worker.process.join(1)
        code = worker.process.exitcode
        if code is None:  # alive but its pipe is broken or garbled: never leave an orphan
            self._kill(worker)
            code = worker.process.exitcode
        else:
            self._discard(worker)
        return Outcome(
            Status.CRASHED,
            (time.monotonic() - worker.started) * 1000,
            f"the worker process {self._how(worker)} while running the check",
        )

    @staticmethod
    def _how(worker: _Worker) -> str:
        code = worker.process.exitcode
        if code is not None and code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def _spawn(self, count: int) -> None:
        """Fork up to ``count`` workers, preparing the parent once for all of
        them, and hand each its first job at once: the first workers are
        already waiting on the network while the last ones are forked. Stops
        early when a busy worker has finished, so that ``poll`` collects it
        and gives it its next job before forking on.

        A failed fork (EAGAIN, ENOMEM) leaves the job queued for a worker that
        frees up or a later fork; with no worker at all, every queued job
        ends as an ``error`` outcome."""
        reap_stopped()
        prepare_fork()
        try:
            for _ in range(count):
                if self._waiting():
                    return
                try:
                    worker = self._fork()
                except OSError as error:
                    self._fork_failed = True
                    if not any(worker.process.is_alive() for worker in self.workers):
                        self._fail_pending(f"could not start a worker process: {error}")
                    return
                self._fork_failed = False
                self.workers.append(worker)
                self.spawned += 1
                self._assign(worker, self.pending.popleft())
        finally:
            gc.unfreeze()  # the children keep the frozen heap; the parent collects as usual

    def _fork(self) -> _Worker:
        """One new worker; raises OSError (closing what it opened) when the fork fails."""
        parent_conn, child_conn = _fork.Pipe()
        began = mmap.mmap(-1, mmap.PAGESIZE)  # anonymous and shared with the child
        # The child must not keep other workers' pipes open: a worker would
        # then never see end-of-file when the parent closes its end.
        inherited = [w.conn for w in self.workers]
        sentinels = [w.process.sentinel for w in self.workers]
        try:
            process = ForkedProcess(
                worker_main, (child_conn, parent_conn, began, inherited, sentinels, self.memory_limit)
            )
        except OSError:
            parent_conn.close()
            child_conn.close()
            began.close()
            raise
        child_conn.close()
        return _Worker(process=process, conn=parent_conn, began=began)

    def _fail_pending(self, reason: str) -> None:
        while self.pending:
            job = self.pending.popleft()
            self._start_failures.pop(id(job), None)
            self.finished.append((job, Outcome(Status.ERROR, 0, reason)))

    def _kill(self, worker: _Worker) -> None:
        if worker.process.is_alive():
            os.kill(worker.pid, signal.SIGKILL)
        worker.process.join(5)
        worker.job = None
        self._discard(worker)

    def _retire(self, worker: _Worker) -> None:
        worker.process.stop()  # idle: it holds nothing, and the run need not wait for it to exit
        self._discard(worker)

    def _discard(self, worker: _Worker) -> None:
        worker.conn.close()
        worker.process.close()
        worker.began.close()
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
