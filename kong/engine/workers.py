"""The worker process: how the pool forks it cheaply and safely, and the
loop it runs (one check at a time, under a memory limit, never touching the
parent's database connections).
"""

from __future__ import annotations

import gc
import mmap
import os
import resource
import signal
import struct
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

from kong.engine import runner
from kong.engine.runner import CheckTimeout, Outcome
from kong.status import Status

# How much lower the workers' CPU priority is than the parent's (see _worker_main).
WORKER_NICENESS = 5


class ForkedProcess:
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

    def stop(self) -> None:
        """Kill the child and release the sentinel without waiting for it to
        exit (tearing down a worker's address space takes milliseconds of
        CPU, and 64 of them add up); ``reap_stopped`` reaps it later."""
        if self.is_alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _stopped.append(self.pid)
            self.exitcode = -signal.SIGKILL
        if self.sentinel >= 0:
            os.close(self.sentinel)
            self.sentinel = -1

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


# Workers killed by ``ForkedProcess.stop`` and not reaped yet.
_stopped: list[int] = []


def reap_stopped() -> None:
    """Reap the stopped workers that have exited (never waits). Those still
    exiting are reaped by a later call, or by init once this process ends."""
    for pid in list(_stopped):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not ours (a forked worker inherits the list), or reaped elsewhere
            done = pid
        if done:
            _stopped.remove(pid)


def read_count(page: mmap.mmap) -> int:
    return int(struct.unpack_from("Q", page, 0)[0])


def prepare_fork() -> None:
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


def memory_limit_setting() -> int:
    try:
        from kong.conf import kong_settings

        return kong_settings.WORKER_MEMORY_LIMIT or 0
    except Exception:  # Django not configured: no limit
        return 0


def worker_main(
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
        taken = read_count(began) + 1
        struct.pack_into("Q", began, 0, taken)
        try:
            outcome = runner.execute(job)
        except CheckTimeout:  # the alarm fired between the script and its cleanup
            outcome = Outcome(Status.TIMEOUT, job.timeout * 1000, f"timed out after {job.timeout:g} s")
        except BaseException as error:  # report, never die silently
            outcome = Outcome(Status.CRASHED, 0, f"the worker failed: {type(error).__name__}: {error}")
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
