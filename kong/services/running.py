"""Run checks in a pool of workers and record them in small batches, while
the run's claims are renewed on a timer and its alerts are sent in the
background."""

from __future__ import annotations

import atexit
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, OperationalError
from django.utils import timezone

from kong.conf import kong_settings
from kong.engine import pool
from kong.engine.runner import Job, Outcome
from kong.models import Check, TestResult
from kong.notifiers import outbox
from kong.services.claims import release_claims, renew_claims
from kong.services.jobs import prepare
from kong.services.recording import record_many
from kong.services.reports import CheckReport, RunReport, report_for

logger = logging.getLogger("kong.services")


# Results are written in small batches: a result is written as it arrives
# unless the last write was less than RECORD_DELAY seconds ago; then it waits
# for more, at most RECORD_BATCH of them or until the next one arrives late.
RECORD_BATCH = 20
RECORD_DELAY = 0.25


def run_checks(
    checks: Iterable[Check],
    *,
    workers: int | None = None,
    timeout: float | None = None,
    token: str = "",
    on_result: Callable[[CheckReport, int, int], None] | None = None,
    worker: str = "",
    reuse_pool: bool = False,
) -> RunReport:
    """Run ``checks`` (in a pool of ``workers`` processes; 0 runs inline) and
    record every result. An invalid script is recorded as an ``error``
    result, never skipped. ``on_result(report, done, total)`` follows
    progress; if it raises (a closed stdout), the run still records every
    result once and then re-raises.

    ``token`` is the claim this run holds on ``checks`` (``claim_due``):
    the run renews its leases on a timer while it lasts, records only the
    checks it still holds, and on any exit releases the claims of checks it
    did not record, so they are due again at once.

    ``worker`` names where the run happens in ``TestResult.worker`` (a task
    worker's id); '' is this process, ``host:pid``.

    Alerts: pending deliveries (left by an earlier run, or failures whose
    mute has ended) start going out at once, and this run's own as its
    results are committed, in a background ``outbox.Sender``; the run ends
    by waiting at most one ``KONG_DELIVERY_TIMEOUT`` for what is in flight
    (the rest stays pending for the next run). A test's failures on the
    sites of one type are held until the run has recorded all of those
    checks, so a storm becomes one summary (``Storms``).
    """
    started = timezone.now()
    checks = list(checks)
    storms = Storms(checks)
    sender = outbox.Sender()
    outbox.alert_ended_mutes()
    sender.pump()
    by_key = {check.pk: check for check in checks}
    sources: dict[int, str] = {}
    done: dict[int, CheckReport] = {}
    recorded: set[int] = set()
    total = len(checks)
    pending: list[tuple[Check, Outcome, str]] = []
    last_flush = float("-inf")  # a slow stream of results is written as each arrives
    lease = LeaseKeeper([token] if token else [])
    callback_error: BaseException | None = None

    def flush() -> None:
        nonlocal callback_error
        batch = pending[:]  # taken first: a batch is never recorded twice
        pending.clear()
        results = _record_retrying(batch, token, storms, worker)
        for (check, _, _), result in zip(batch, results, strict=True):
            recorded.add(check.pk)
            storms.recorded(check)
            if result is None:
                continue
            done[check.pk] = item = report_for(check, result)
            if on_result and callback_error is None:
                try:
                    on_result(item, len(done), total)
                except (BrokenPipeError, KeyboardInterrupt) as error:  # keep recording; raise at the end
                    callback_error = error

    def keep(check: Check, outcome: Outcome) -> None:
        nonlocal last_flush
        pending.append((check, outcome, sources.get(check.pk, "")))
        if len(pending) >= RECORD_BATCH or time.monotonic() - last_flush >= RECORD_DELAY:
            flush()
            last_flush = time.monotonic()
            sender.pump()  # a few queries: once per batch committed, never per result

    jobs: list[Job] = []
    try:
        for check in checks:
            prepared = prepare(check, timeout=timeout)
            sources[check.pk] = prepared.source
            if prepared.invalid is not None:
                keep(check, prepared.invalid)
            elif prepared.job is not None:
                jobs.append(prepared.job)
        size = kong_settings.WORKERS if workers is None else workers
        for job, outcome in _run_jobs(jobs, size, lease, sender, reuse=reuse_pool):
            keep(by_key[job.key], outcome)
    finally:  # also on Ctrl-C or a database error: what finished is recorded, the rest is due again at once
        try:
            if pending:
                flush()
        finally:
            if token:
                release_claims(token, [check.pk for check in checks if check.pk not in recorded])
    storms.release_all()
    sender.finish()
    if callback_error is not None:
        raise callback_error
    # Report in the order asked for, not the order the pool finished in.
    report = RunReport(results=[done[check.pk] for check in checks if check.pk in done])
    report.duration_ms = (timezone.now() - started).total_seconds() * 1000
    return report


def shared_pool(size: int) -> pool.WorkerPool:
    """One long-lived pool per process, for a task worker (``db_worker``,
    ``rqworker``) that runs task after task: each batch reuses the workers
    the last one forked instead of forking its own. Closed at exit."""
    global _shared_pool
    if _shared_pool is None or _shared_pool.size != size:
        if _shared_pool is not None:
            _shared_pool.close()
        _shared_pool = pool.WorkerPool(size, **pool_options())
        atexit.register(_shared_pool.close)
    return _shared_pool


_shared_pool: pool.WorkerPool | None = None


def _run_jobs(
    jobs: list[Job], size: int, lease: LeaseKeeper, sender: outbox.Sender | None = None, *, reuse: bool = False
) -> Iterator[tuple[Job, Outcome]]:
    """Run ``jobs`` in a pool of ``size`` workers (0: inline; ``reuse``: this
    process's shared pool), renewing the run's leases between results, at
    least every ``lease.interval`` seconds, and (while ``sender`` has alerts
    in flight) keeping it going."""
    if size <= 0 or not jobs:
        for job, outcome in pool.run_jobs(jobs, 0):
            lease.renew_if_due()
            yield job, outcome
        return
    owned = nullcontext(shared_pool(size)) if reuse else pool.WorkerPool(min(size, len(jobs)), **pool_options())
    with owned as workers:
        for job in jobs:
            workers.submit(job)
        try:
            while workers.in_flight:
                lease.renew_if_due()
                if sender is not None and sender.busy:
                    sender.pump()
                    yield from workers.poll(min(lease.interval, SENDER_POLL))
                else:
                    yield from workers.poll(lease.interval)
        finally:
            if workers.in_flight:  # abandoned mid-run (Ctrl-C, SIGTERM, an error)
                workers.cancel()


def pool_options() -> dict[str, Any]:
    """The ``WorkerPool`` options every run uses, from settings."""
    return {
        "kill_grace": kong_settings.KILL_GRACE,
        "max_checks_per_worker": kong_settings.MAX_CHECKS_PER_WORKER,
        "memory_limit": kong_settings.WORKER_MEMORY_LIMIT or 0,
    }


# Seconds between looks at the alerts in flight while no result arrives.
SENDER_POLL = 0.25


class Storms:
    """A run's storm rule: a test's alerts on the sites of one type are held
    while the run may still record more of them, when the run checks that
    test on at least ``KONG_ALERT_SUMMARY_THRESHOLD`` sites of the type; the
    cohort is released (due at once) when its last check is recorded, and
    the outbox folds its failures (or recoveries) into one summary per
    notifier. Held rows of a run that dies become due after
    ``KONG_CLAIM_LEASE``, like the run's claims, and still fold then."""

    def __init__(self, checks: list[Check]) -> None:
        self.group = outbox.new_group()
        sites: dict[tuple[int, int], set[int]] = defaultdict(set)
        self.left: dict[tuple[int, int], int] = defaultdict(int)
        for check in checks:
            if check.site.type_id is not None:
                key = (check.test_id, check.site.type_id)
                sites[key].add(check.site_id)
                self.left[key] += 1
        threshold = kong_settings.ALERT_SUMMARY_THRESHOLD
        self.held = {key for key, members in sites.items() if len(members) >= threshold}

    def hold(self, alert: outbox.Alerted, now: datetime) -> datetime | None:
        key = (alert.check.test_id, alert.check.site.type_id)
        if key in self.held:
            return now + timedelta(seconds=kong_settings.CLAIM_LEASE)
        return None

    def recorded(self, check: Check) -> None:
        """Count ``check`` as recorded (or given up); releases its cohort when it was the last."""
        if check.site.type_id is None:
            return
        key = (check.test_id, check.site.type_id)
        self.left[key] -= 1
        if self.left[key] == 0 and key in self.held:
            self.held.discard(key)
            outbox.release(self.group, key)

    def release_all(self) -> None:
        """The run is over: whatever it still holds is due now."""
        if self.held:
            outbox.release(self.group)
            self.held.clear()


# How often, and how long, recording retries when SQLite reports the
# database locked by another writer (a WAL database with
# "transaction_mode": "IMMEDIATE" rarely needs it).
LOCKED_RETRIES = 5
LOCKED_PAUSE = 0.2


def _record_retrying(
    batch: list[tuple[Check, Outcome, str]], token: str, storms: Storms | None = None, worker: str = ""
) -> list[TestResult | None]:
    for attempt in range(LOCKED_RETRIES):
        try:
            if storms is None:
                return record_many(batch, token=token, worker=worker)
            return record_many(batch, token=token, group=storms.group, hold=storms.hold, worker=worker)
        except OperationalError as error:
            if "locked" not in str(error) or attempt == LOCKED_RETRIES - 1:
                raise
            time.sleep(LOCKED_PAUSE * (attempt + 1))
    raise AssertionError("unreachable")


def run_check(check_id: int, *, token: str = "") -> dict[str, Any] | None:
    """Run one check in an isolated worker process and record it; returns
    the CheckReport as a dict, or None when ``token`` no longer holds its
    claim. The unit of work for Django Tasks."""
    check = Check.objects.select_related("test", "site", "site__type", "server", "location").get(pk=check_id)
    report = run_checks([check], workers=1, token=token)
    return asdict(report.results[0]) if report.results else None


class LeaseKeeper:
    """Renews a run's claims on a timer: ``renew_if_due()`` is called from
    the run's loop, which never waits longer than ``interval`` seconds, so a
    lease is renewed well before it can expire, however long one check runs.
    A renewal that fails (the database is away) is retried next time."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.tokens = [token for token in tokens if token]
        self.interval = max(0.5, kong_settings.CLAIM_LEASE / 4)
        self.renewed = time.monotonic()

    def renew_if_due(self) -> None:
        if not self.tokens or time.monotonic() - self.renewed < self.interval:
            return
        try:
            renew_claims(self.tokens)
        except DatabaseError:
            logger.warning("kong: could not renew claims; retrying", exc_info=True)
            return
        self.renewed = time.monotonic()
