"""The loop behind ``kong_scheduler``: a long-running alternative to cron."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from kong import rollups, services
from kong.engine import pool
from kong.engine.runner import Outcome
from kong.models import Check
from kong.notifiers import outbox
from kong.services.running import RECORD_BATCH, RECORD_DELAY

logger = logging.getLogger("kong.scheduler")

# Seconds between two pumps of the alert sender while results arrive.
SENDER_POLL = 0.25


class Scheduler:
    """The loop behind ``kong_scheduler``: claim what is due, feed a
    long-lived worker pool, record what finishes, prune once a day.

    Each step is a method that tests call directly. It claims no more checks
    than it has idle workers, so a claim never waits in a local queue, and it
    renews its leases every tick while checks are in flight.

    Alerts go out through ``sender``, an ``outbox.Sender`` whose threads do
    the sending: each tick alerts failures whose mute has ended and starts
    due deliveries, and each collect records the attempts that finished,
    so a dead SMTP server never holds up the loop. The scheduler has no run
    to group storms by: an alert of a test on a type that could storm waits
    ``outbox.STORM_WINDOW`` seconds for the rest (``outbox.storm_hold``).
    """

    # The group of every delivery a scheduler writes: storms fold across ticks.
    GROUP = "scheduler"

    def __init__(self, workers: int, *, prune: bool = True, task: Any = None) -> None:
        """``task``: Kong's Django Task (``kong.tasks.run_checks_task``) when
        ``KONG_EXECUTOR = "tasks"``: each tick then claims every due check and
        enqueues it for the engine's workers, and the local pool stays idle.
        Without it, each tick runs the default location's due checks here."""
        self.task = task
        self.enqueued = services.EnqueueReport()
        self.pool = pool.WorkerPool(max(1, workers), **services.pool_options())
        # pk -> (check, masked script, the token of the tick that claimed it)
        self.in_flight: dict[int, tuple[Check, str, str]] = {}
        # Outcomes that finished but could not be recorded yet (the database
        # was away); recorded, in order, before anything else.
        self.unrecorded: list[tuple[Check, Outcome, str, str]] = []
        self.prune_enabled = prune
        self.pruned_on: date | None = None
        self.sender = outbox.Sender()
        self.backlog = False  # the last claim was full: more checks may be due
        self.pumped = float("-inf")  # when the sender was last pumped
        self.recorded = float("-inf")  # when outcomes were last recorded

    @property
    def tokens(self) -> set[str]:
        """The claims this scheduler holds: one token per tick with checks in flight."""
        return {token for _, _, token in self.in_flight.values()}

    def tick(self, now: datetime | None = None) -> list[services.CheckReport]:
        """Renew leases, then claim and start due checks for idle workers.
        Returns reports for checks recorded at once (invalid scripts).

        Each tick claims with a token of its own and submits only what that
        claim returned, so a check still in flight is never started again.
        """
        reports = self.record_unrecorded()
        if self.in_flight:
            services.renew_claims(self.tokens, now)
        self.send_alerts(now)
        if self.task is not None:
            services.sync_checks()
            self.enqueued = services.enqueue_checks(Check.objects.all(), self.task, due=True, now=now)
            return reports
        if self.pool.size - self.pool.in_flight <= 0:
            return reports
        services.sync_checks()  # tests and sites added or retired since the last tick
        return reports + self.claim_for_idle(now)

    def claim_for_idle(self, now: datetime | None = None) -> list[services.CheckReport]:
        """Claim and start due checks for the idle workers (no more), with a
        token of this claim's own. When the claim took as many as it asked
        for, more may be due: the loop claims again as workers free up
        rather than leave them idle until the next tick (``run``)."""
        idle = self.pool.size - self.pool.in_flight
        self.backlog = False
        if idle <= 0:
            return []
        # Other locations' checks are left for their task queues.
        everything = services.here(Check.objects.select_related("test", "site", "site__type", "server", "location"))
        token = services.new_token()
        claimed = list(services.claim_due(everything, now=now, limit=idle, token=token))
        self.backlog = len(claimed) >= idle
        for check in claimed:
            if check.pk in self.in_flight:  # never twice, whatever the database says
                continue
            prepared = services.prepare(check)
            if prepared.invalid is not None:
                self.keep(check, prepared.invalid, "", token)
            elif prepared.job is not None:
                self.in_flight[check.pk] = (check, prepared.source, token)
                self.pool.submit(prepared.job)
        return self.record_unrecorded()

    def collect(self, timeout: float) -> list[services.CheckReport]:
        """Wait up to ``timeout`` seconds for checks to finish; record them
        (and any outcome held back while the database was away)."""
        if not self.pool.in_flight:
            time.sleep(timeout)  # nothing to wait for: do not spin
        for job, outcome in self.pool.poll(timeout):
            entry = self.in_flight.pop(job.key, None)
            if entry is None:  # not ours to record; never crash the loop over it
                logger.error("kong_scheduler: an outcome for check %s that is not in flight", job.key)
                continue
            check, source, token = entry
            self.keep(check, outcome, source, token)
        # Record in batches, as run_checks does: one transaction per result
        # would cost the loop more than the checks it waits for.
        reports = []
        if not self.in_flight or len(self.unrecorded) >= RECORD_BATCH or time.monotonic() - self.recorded >= RECORD_DELAY:
            reports = self.record_unrecorded()
        if (reports or self.sender.busy) and time.monotonic() - self.pumped >= SENDER_POLL:
            self.sender.pump()  # folds storms and claims deliveries: a few queries, so not per result
            self.pumped = time.monotonic()
        return reports

    def send_alerts(self, now: datetime | None = None) -> None:
        """Alert failures whose mute has ended, then start due deliveries
        (never waits for one). Skipped inside a transaction: only committed
        alerts go out."""
        if self.sender.enabled():
            outbox.alert_ended_mutes(now)
            self.sender.pump(now)

    def keep(self, check: Check, outcome: Outcome, source: str, token: str) -> None:
        self.unrecorded.append((check, outcome, source, token))

    def record_unrecorded(self) -> list[services.CheckReport]:
        """Record held outcomes, oldest first. On a database error the rest
        stay held and the error propagates (the loop logs it and retries).
        Recording is idempotent per claim, so a retry never stores twice."""
        reports = []
        self.recorded = time.monotonic()
        while self.unrecorded:
            token = self.unrecorded[0][3]  # the oldest outcome's claim, with every other of that claim
            batch = [item for item in self.unrecorded if item[3] == token]
            results = services.record_many(
                [(check, outcome, source) for check, outcome, source, _ in batch],
                token=token, group=self.GROUP, hold=self.hold,
            )  # fmt: skip
            self.unrecorded = [item for item in self.unrecorded if item[3] != token]
            reports += [
                services.report_for(check, result)
                for (check, _, _, _), result in zip(batch, results, strict=True)
                if result is not None
            ]
        return reports

    def hold(self, alert: outbox.Alerted, now: datetime) -> datetime | None:
        return outbox.storm_hold(alert, self.GROUP, now)

    def prune_daily(self, now: datetime | None = None) -> rollups.PruneReport | None:
        """Fold and prune once per calendar day, a few seconds at a time."""
        today = rollups.local_day(now or timezone.now())
        if not self.prune_enabled or self.pruned_on == today:
            return None
        report = rollups.prune(now, time_budget=2.0)
        if report.complete:
            self.pruned_on = today
        return report

    def shutdown(self, grace: float, *, hurry: Callable[[], bool] = lambda: False) -> list[services.CheckReport]:
        """Give checks in flight ``grace`` seconds (until ``hurry()``) to
        finish and record them; kill the rest, record nothing for them, and
        release their claims so the next run takes them at once."""
        deadline = time.monotonic() + grace
        reports: list[services.CheckReport] = []
        while self.in_flight and not hurry() and (left := deadline - time.monotonic()) > 0:
            reports += self.collect_only(min(left, 0.2))
        self.pool.cancel()
        self.pool.close()
        tokens = self.tokens
        self.in_flight.clear()
        try:
            reports += self.record_unrecorded()
            for token in tokens:
                services.release_claims(token)
            # At most one delivery timeout more; what is unsent stays pending.
            self.sender.finish(0 if hurry() else None)
        except DatabaseError:  # the leases expire on their own
            logger.exception("kong_scheduler: could not record or release claims while stopping")
        return reports

    def run(
        self,
        *,
        tick: float,
        stopping: Callable[[], bool],
        on_result: Callable[[services.CheckReport], None] = lambda report: None,
    ) -> None:
        """Tick every ``tick`` seconds until ``stopping()`` is true. A
        database error is logged once per outage; finished outcomes are held
        and recorded when the database is back, and the loop keeps going."""
        next_tick = 0.0
        outage = False
        while not stopping():
            try:
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + tick
                    close_old_connections()
                    reports = self.tick()
                    self.prune_daily()
                else:
                    reports = self.collect(min(0.5, max(0.0, next_tick - time.monotonic())))
                    if self.backlog and self.pool.size - self.pool.in_flight >= max(1, self.pool.size // 8):
                        reports += self.claim_for_idle()  # more are due: an eighth of the pool is idle
                if outage:
                    logger.warning("kong_scheduler: the database is back")
                    outage = False
            except DatabaseError as error:
                if not outage:
                    logger.error(
                        "kong_scheduler: database error (%s); holding %d finished check(s), retrying",
                        " ".join(str(error).split()),
                        len(self.unrecorded),
                    )
                outage = True
                connection.close()  # reconnect on the next try
                reports = self.collect_only(min(0.5, max(0.0, next_tick - time.monotonic())))
            for report in reports:
                on_result(report)

    def collect_only(self, timeout: float) -> list[services.CheckReport]:
        """``collect`` while the database is away: finished checks are held."""
        try:
            return self.collect(timeout)
        except DatabaseError:
            return []
