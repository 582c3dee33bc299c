"""The loop behind ``kong_scheduler``: a long-running alternative to cron."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import date, datetime

from django.db import DatabaseError, close_old_connections
from django.utils import timezone

from kong import pool, rollups, services
from kong.conf import kong_settings
from kong.models import Check
from kong.scripts import ScriptError, mask

logger = logging.getLogger("kong.scheduler")


class Scheduler:
    """The loop behind ``kong_scheduler``: claim what is due, feed a
    long-lived worker pool, record what finishes, prune once a day.

    Each step is a method that tests call directly. It claims no more checks
    than it has idle workers, so a claim never waits in a local queue, and it
    renews its leases every tick while checks are in flight.
    """

    def __init__(self, workers: int, *, prune: bool = True) -> None:
        self.pool = pool.WorkerPool(
            max(1, workers),
            kill_grace=float(kong_settings.KILL_GRACE),
            max_checks_per_worker=int(kong_settings.MAX_CHECKS_PER_WORKER),
        )
        self.token = uuid.uuid4().hex
        self.in_flight: dict[int, tuple[Check, str]] = {}  # pk -> (check, masked script)
        self.prune_enabled = prune
        self.pruned_on: date | None = None

    def tick(self, now: datetime | None = None) -> list[services.CheckReport]:
        """Renew leases, then claim and start due checks for idle workers.
        Returns reports for checks recorded at once (invalid scripts)."""
        if self.in_flight:
            services.renew_claims(self.token, now)
        idle = self.pool.size - self.pool.in_flight
        if idle <= 0:
            return []
        services.sync_checks()  # tests and sites added or retired since the last tick
        everything = Check.objects.select_related("test", "site", "site__type", "server")
        reports = []
        for check in services.claim_due(everything, now=now, limit=idle, token=self.token):
            try:
                job = services.build_job(check)
            except ScriptError as error:
                reports.append(services.report_for(check, services.record(check, services.invalid_outcome(error))))
                continue
            self.in_flight[check.pk] = (check, mask(job.script.source, list(job.secrets)))
            self.pool.submit(job)
        return reports

    def collect(self, timeout: float) -> list[services.CheckReport]:
        """Wait up to ``timeout`` seconds for checks to finish; record them."""
        reports = []
        for job, outcome in self.pool.poll(timeout):
            check, source = self.in_flight.pop(job.key)
            reports.append(services.report_for(check, services.record(check, outcome, source=source)))
        return reports

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
            reports += self.collect(min(left, 0.2))
        self.pool.cancel()
        self.pool.close()
        self.in_flight.clear()
        services.release_claims(self.token)
        return reports

    def run(
        self,
        *,
        tick: float,
        stopping: Callable[[], bool],
        on_result: Callable[[services.CheckReport], None] = lambda report: None,
    ) -> None:
        """Tick every ``tick`` seconds until ``stopping()`` is true. A
        database error is logged and retried on the next tick."""
        next_tick = 0.0
        while not stopping():
            try:
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + tick
                    close_old_connections()
                    reports = self.tick()
                    self.prune_daily()
                else:
                    reports = self.collect(min(0.5, max(0.0, next_tick - time.monotonic())))
            except DatabaseError:
                logger.exception("kong_scheduler: database error; retrying on the next tick")
                reports = []
            for report in reports:
                on_result(report)
