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
import resource
import signal
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from kong.engine import runner
from kong.engine.runner import CheckTimeout, Job, Outcome

_fork = multiprocessing.get_context("fork")

# How much lower the workers' CPU priority is than the parent's (see _worker_main).
WORKER_NICENESS = 5

# How many fresh workers a check may go through that die before it begins,
# before it is given up as an error (a worker that cannot even start).
MAX_START_ATTEMPTS = 3

# ``memory_limit`` default: read KONG_WORKER_MEMORY_LIMIT when the pool is made.
FROM_SETTINGS: Any = object()


class _ForkedProcess:
    """The slice of ``multiprocessing.Process`` the pool needs, on a bare
    ``os.fork()``. It starts a worker in about half the parent's time
    (multiprocessing's bookkeeping doubles the cost of a fork), and it has no
    interpreter-exit hook that signals workers and then waits for them.

    ``sentinel`` is a pipe the child holds open: it reads as end-of-file once
    the child has exited, so ``multiprocessing.connection.wait`` can watch it.
    """

    def __init__(self, target: Callable[..., None], args: tuple[Any, ...]) -> None:
        """Fork and run ``target(*args)`` in the child. Raises OSError when
        the fork fails (EAGAIN, ENOMEM), leaking no descriptor."""
        sentinel, held_by_child = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(sentinel)
            os.close(held_by_child)
            raise
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
        return _read_count(self.began) >= self.sent


def _read_count(page: mmap.mmap) -> int:
    return int(struct.unpack_from("Q", page, 0)[0])


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
        self.memory_limit = _memory_limit_setting() if memory_limit is FROM_SETTINGS else (memory_limit or 0)
        self.workers: list[_Worker] = []
        self.pending: deque[Job] = deque()
        self.spawned = 0
        # Checks that ended without a worker (none could start), for the next poll.
        self.finished: list[tuple[Job, Outcome]] = []
        # id(job) -> how many workers died before beginning it.
        self._start_failures: dict[int, int] = {}

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
            finished.extend(self._collect(0 if finished else timeout))
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
        if wanted > 0:
            self._spawn(wanted)

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
        self.finished.append((job, Outcome("error", 0, reason)))

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
                if outcome is None:  # the worker died before it began the check
                    continue
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
            "crashed",
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
        """Fork ``count`` workers, preparing the parent once for all of them,
        and hand each its first job at once: the first workers are already
        waiting on the network while the last ones are forked.

        A failed fork (EAGAIN, ENOMEM) leaves the job queued for a worker that
        frees up or a later fork; with no worker at all, every queued job
        ends as an ``error`` outcome."""
        _prepare_fork()
        try:
            for _ in range(count):
                try:
                    worker = self._fork()
                except OSError as error:
                    if not any(worker.process.is_alive() for worker in self.workers):
                        self._fail_pending(f"could not start a worker process: {error}")
                    return
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
            process = _ForkedProcess(
                _worker_main, (child_conn, parent_conn, began, inherited, sentinels, self.memory_limit)
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
            self.finished.append((job, Outcome("error", 0, reason)))

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


def _memory_limit_setting() -> int:
    try:
        from kong.conf import kong_settings

        return kong_settings.WORKER_MEMORY_LIMIT or 0
    except Exception:  # Django not configured: no limit
        return 0


def _worker_main(
    conn: Connection,
    parent_end: Connection,
    began: mmap.mmap,
    inherited: list[Connection],
    sentinels: list[int],
    memory_limit: int,
) -> None:
    parent_end.close()
    for other in inherited:  # other workers' pipes, copied by the fork
        other.close()
    for fd in sentinels:
        try:
            os.close(fd)
        except OSError:
            pass
    if memory_limit > 0:
        _limit_memory(memory_limit)
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
        taken = _read_count(began) + 1
        struct.pack_into("Q", began, 0, taken)
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


def _limit_memory(limit: int) -> None:
    """Let this process map at most ``limit`` bytes more than it inherited
    (RLIMIT_AS, never above a hard limit already set), so a runaway check
    raises MemoryError here instead of waking the host's OOM killer.

    The limit counts from the inherited address space, not from zero: a
    worker starts with every mapping of the parent, and glibc reserves 64 MiB
    of address space for each thread that ever allocated (up to 8 per core),
    so a parent with 16 busy threads already maps over 1 GiB it never uses.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _address_space() + limit
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ValueError, OSError):
        pass


def _address_space() -> int:
    """This process's mapped address space in bytes (its VSZ); 0 if unknown."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * mmap.PAGESIZE
    except (OSError, ValueError, IndexError):
        return 0


def _forget_db_connections() -> None:
    """A forked child must not use (or close) the parent's DB sockets."""
    try:
        from django.db import connections

        for connection in connections.all(initialized_only=True):
            connection.connection = None
    except Exception:
        pass
