"""Plan which checks run, run them, record results and trigger alerts.

Commands, views and tasks call these functions; they never talk to twill or
send mail themselves.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.db import DatabaseError, close_old_connections, models, transaction
from django.db.models import F, Q
from django.utils import timezone

from kong import pool, rollups, schedule
from kong.conf import kong_settings
from kong.models import Check, CheckQuerySet, Server, Site, Test, TestResult, Type
from kong.notifiers import Event, notify
from kong.runner import Job, Outcome
from kong.scripts import ScriptError, compile_script, context_for, mask, render

logger = logging.getLogger("kong.services")


class KongError(Exception):
    """Kong cannot run: unknown slug, nothing to check, bad configuration."""


@dataclass
class CheckReport:
    """One check's result as commands and APIs print it (DESIGN's JSON shape)."""

    test: str
    site: str
    server: str | None
    status: str
    succeeded: bool
    duration_ms: float
    failed_line: int | None
    reason: str
    result_id: int | None = None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("result_id")
        return data


@dataclass
class RunReport:
    results: list[CheckReport] = field(default_factory=list)
    duration_ms: float = 0.0

    @property
    def passed(self) -> int:
        return sum(1 for report in self.results if report.succeeded)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed

    @property
    def exit_code(self) -> int:
        """Nagios convention: 0 all passed, 2 anything else."""
        return 0 if self.failed == 0 else 2

    def as_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "failed": self.failed,
            "duration_ms": round(self.duration_ms, 1),
            "results": [report.as_json() for report in self.results],
        }


# -- planning --------------------------------------------------------------


def applicable_keys() -> set[tuple[int, int, int | None]]:
    """``(test_id, site_id, server_id)`` for every check the inventory implies."""
    live = Site.objects.filter(is_live=True)
    tests = Test.objects.active()
    per_server = set(tests.filter(per_server=True).values_list("pk", flat=True))
    pairs = set(
        Test.sites.through.objects.filter(test__in=tests, site__in=live).values_list("test_id", "site_id")
    )
    by_type = Test.types.through.objects.filter(test__in=tests).values_list("test_id", "type_id")
    type_sites: dict[int, list[int]] = {}
    for site_id, type_id in live.filter(type__isnull=False).values_list("pk", "type_id"):
        type_sites.setdefault(type_id, []).append(site_id)
    for test_id, type_id in by_type:
        pairs.update((test_id, site_id) for site_id in type_sites.get(type_id, ()))
    servers: dict[int, list[int]] = {}
    if per_server:
        for site_id, server_id in Site.servers.through.objects.filter(server__is_active=True).values_list(
            "site_id", "server_id"
        ):
            servers.setdefault(site_id, []).append(server_id)
    keys: set[tuple[int, int, int | None]] = set()
    for test_id, site_id in pairs:
        if test_id in per_server and servers.get(site_id):
            keys.update((test_id, site_id, server_id) for server_id in servers[site_id])
        else:
            keys.add((test_id, site_id, None))
    return keys


def sync_checks() -> None:
    """Create a Check row for every applicable pair; drop rows that no longer apply."""
    wanted = applicable_keys()
    existing = {
        (test_id, site_id, server_id): pk
        for pk, test_id, site_id, server_id in Check.objects.values_list("pk", "test_id", "site_id", "server_id")
    }
    missing = [
        Check(test_id=test_id, site_id=site_id, server_id=server_id)
        for test_id, site_id, server_id in wanted - existing.keys()
    ]
    if missing:
        Check.objects.bulk_create(missing, ignore_conflicts=True, batch_size=500)
    stale = [pk for key, pk in existing.items() if key not in wanted]
    if stale:
        Check.objects.filter(pk__in=stale).delete()


def select_checks(
    *,
    tests: Sequence[str] = (),
    sites: Sequence[str] = (),
    types: Sequence[str] = (),
    servers: Sequence[str] = (),
) -> CheckQuerySet:
    """The checks matching every given selector (slugs). Raises KongError for
    an unknown slug, or when explicit selectors match nothing."""
    _require_slugs(Test, tests, "test")
    _require_slugs(Site, sites, "site")
    _require_slugs(Type, types, "type")
    _require_slugs(Server, servers, "server")
    sync_checks()
    checks = Check.objects.all().select_related("test", "site", "site__type", "server")
    if tests:
        checks = checks.filter(test__slug__in=tests)
    if sites:
        checks = checks.filter(site__slug__in=sites)
    if types:
        checks = checks.filter(site__type__slug__in=types)
    if servers:
        checks = checks.filter(
            Q(server__slug__in=servers) | Q(server__isnull=True, site__servers__slug__in=servers)
        ).distinct()
    if not checks.exists() and (tests or sites or types or servers):
        raise KongError(_explain_empty(tests, sites, types, servers))
    return checks.order_by("site__name", "test__name", "server__name")


def _require_slugs(model: type[models.Model], slugs: Sequence[str], noun: str) -> None:
    if not slugs:
        return
    known = set(model._default_manager.filter(slug__in=slugs).values_list("slug", flat=True))
    unknown = [slug for slug in slugs if slug not in known]
    if unknown:
        raise KongError(f"unknown {noun} {', '.join(repr(slug) for slug in unknown)}")


def _explain_empty(tests: Sequence[str], sites: Sequence[str], types: Sequence[str], servers: Sequence[str]) -> str:
    inactive = list(Test.objects.filter(slug__in=tests, is_active=False).values_list("slug", flat=True))
    if inactive:
        return f"test {', '.join(map(repr, inactive))} is not active"
    dead = list(Site.objects.filter(slug__in=sites, is_live=False).values_list("slug", flat=True))
    if dead:
        return f"site {', '.join(map(repr, dead))} is not live"
    asked = ", ".join(
        f"{noun} {', '.join(map(repr, slugs))}"
        for noun, slugs in (("test", tests), ("site", sites), ("type", types), ("server", servers))
        if slugs
    )
    return f"no checks match {asked}: no active test applies to a live site there"


# -- running ---------------------------------------------------------------


def build_job(check: Check, *, timeout: float | None = None) -> Job:
    """Render and validate ``check``'s script. Raises ScriptError."""
    script = compile_script(check.test, check.site, check.server)
    return Job(
        key=check.pk,
        label=check.label,
        script=script,
        timeout=float(timeout or check.test.effective_timeout),
        request_timeout=float(kong_settings.REQUEST_TIMEOUT),
        safe=bool(kong_settings.SAFE_MODE),
        verify_tls=bool(kong_settings.VERIFY_TLS),
        secrets=tuple(check.site.secret_values()),
    )


def masked_source(check: Check) -> str:
    """The rendered script with secrets masked, or '' when it cannot render."""
    try:
        text = render(check.test.body, context_for(check.site, check.test, check.server))
    except ScriptError:
        return check.test.body
    return mask(text, check.site.secret_values())


def invalid_outcome(error: ScriptError) -> Outcome:
    return Outcome("error", 0, f"invalid script: {error}", failed_line=error.line)


def record(check: Check, outcome: Outcome, *, source: str = "") -> TestResult:
    """Store one TestResult and fold it into the Check row, in one transaction.

    Alerts go out after the commit. Returns the new TestResult.
    """
    now = timezone.now()
    secrets = check.site.secret_values()
    reason = mask(outcome.reason, secrets)
    content = mask(outcome.log, secrets)
    if reason:
        content = f"{content.rstrip()}\n\n{outcome.status.upper()}: {reason}\n".lstrip()
    with transaction.atomic():
        result = TestResult.objects.create(
            test_id=check.test_id,
            site_id=check.site_id,
            server_id=check.server_id,
            run_date=now - timedelta(milliseconds=outcome.duration_ms),
            duration=outcome.duration_ms,
            succeeded=outcome.succeeded,
            status=outcome.status,
            reason=reason[:500],
            content=content,
            script=source or masked_source(check),
            failed_line=outcome.failed_line,
        )
        state = Check.objects.select_for_update().filter(pk=check.pk).first()
        if state is None:  # sync_checks dropped the pair mid-run: keep the result only
            return result
        transition = state.apply_result(result)
        state.claimed_until = None
        state.claim_token = ""
        state.next_due_at = schedule.next_run(check.test.schedule, now)
        state.save()
        if transition.alert:
            event = Event(kind=transition.alert, check=state, result=result)
            transaction.on_commit(lambda: notify(event))
    return result


def report_for(check: Check, result: TestResult) -> CheckReport:
    return CheckReport(
        test=check.test.slug,
        site=check.site.slug,
        server=check.server.slug if check.server else None,
        status=result.status,
        succeeded=result.succeeded,
        duration_ms=round(result.duration, 1),
        failed_line=result.failed_line,
        reason=result.reason,
        result_id=result.pk,
    )


def run_checks(
    checks: Iterable[Check],
    *,
    workers: int | None = None,
    timeout: float | None = None,
    on_result: Callable[[CheckReport, int, int], None] | None = None,
) -> RunReport:
    """Run ``checks`` (in a pool of ``workers`` processes; 0 runs inline) and
    record every result. An invalid script is recorded as an ``error``
    result, never skipped. ``on_result(report, done, total)`` follows progress."""
    started = timezone.now()
    checks = list(checks)
    by_key = {check.pk: check for check in checks}
    sources: dict[int, str] = {}
    done: dict[int, CheckReport] = {}
    total = len(checks)

    def keep(check: Check, outcome: Outcome) -> None:
        result = record(check, outcome, source=sources.get(check.pk, ""))
        done[check.pk] = item = report_for(check, result)
        if on_result:
            on_result(item, len(done), total)

    jobs: list[Job] = []
    for check in checks:
        try:
            job = build_job(check, timeout=timeout)
        except ScriptError as error:
            keep(check, invalid_outcome(error))
            continue
        sources[check.pk] = mask(job.script.source, list(job.secrets))
        jobs.append(job)

    size = kong_settings.WORKERS if workers is None else workers
    for job, outcome in pool.run_jobs(
        jobs,
        size,
        kill_grace=float(kong_settings.KILL_GRACE),
        max_checks_per_worker=int(kong_settings.MAX_CHECKS_PER_WORKER),
    ):
        keep(by_key[job.key], outcome)
    # Report in the order asked for, not the order the pool finished in.
    report = RunReport(results=[done[check.pk] for check in checks if check.pk in done])
    report.duration_ms = (timezone.now() - started).total_seconds() * 1000
    return report


def run_check(check_id: int) -> dict[str, Any]:
    """Run one check inline and record it; returns the CheckReport as a dict.

    The unit of work for run-now and for Django Tasks.
    """
    check = Check.objects.select_related("test", "site", "site__type", "server").get(pk=check_id)
    report = run_checks([check], workers=0)
    return asdict(report.results[0])


def dry_run(checks: Iterable[Check]) -> list[tuple[Check, ScriptError | None]]:
    """Render and validate each check's script without running it."""
    problems: list[tuple[Check, ScriptError | None]] = []
    for check in checks:
        try:
            build_job(check)
        except ScriptError as error:
            problems.append((check, error))
        else:
            problems.append((check, None))
    return problems


# -- scheduling --------------------------------------------------------------


def claim_due(
    checks: CheckQuerySet,
    *,
    now: datetime | None = None,
    limit: int | None = None,
    token: str | None = None,
) -> CheckQuerySet:
    """Atomically claim the due checks among ``checks`` (at most ``limit``,
    most overdue first) and return them.

    One filtered UPDATE sets a lease and a token, and repeats the due and
    unclaimed conditions, so a concurrent run's UPDATE (PostgreSQL re-checks
    them on rows another transaction just claimed; SQLite runs writers one at
    a time) skips rows already claimed: no check runs twice for one slot. A
    crashed run's claims expire after ``KONG_CLAIM_LEASE`` seconds; a
    long-lived claimer keeps its own alive with ``renew_claims``.
    """
    now = now or timezone.now()
    token = token or uuid.uuid4().hex
    due: Any = checks.due(now).values("pk")
    if limit is not None:  # most overdue first; a list, as some databases refuse LIMIT in IN (...)
        ordered = Check.objects.filter(pk__in=due).order_by(F("next_due_at").asc(nulls_first=True), "pk")
        due = list(ordered.values_list("pk", flat=True)[: max(0, limit)])
    Check.objects.filter(pk__in=due).filter(
        Q(next_due_at__isnull=True) | Q(next_due_at__lte=now),
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now),
    ).update(claimed_until=now + _lease(), claim_token=token)
    return checks.filter(claim_token=token)


def renew_claims(token: str, now: datetime | None = None) -> int:
    """Extend the lease of every check still claimed with ``token``; returns how many."""
    now = now or timezone.now()
    return Check.objects.filter(claim_token=token).update(claimed_until=now + _lease())


def release_claims(token: str, pks: Iterable[int] | None = None) -> int:
    """Give up claims made with ``token`` (only ``pks``, if given) without
    recording anything: the checks stay due and the next run takes them."""
    claimed = Check.objects.filter(claim_token=token)
    if pks is not None:
        claimed = claimed.filter(pk__in=list(pks))
    return claimed.update(claimed_until=None, claim_token="")


def _lease() -> timedelta:
    return timedelta(seconds=float(kong_settings.CLAIM_LEASE))


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

    def tick(self, now: datetime | None = None) -> list[CheckReport]:
        """Renew leases, then claim and start due checks for idle workers.
        Returns reports for checks recorded at once (invalid scripts)."""
        if self.in_flight:
            renew_claims(self.token, now)
        idle = self.pool.size - self.pool.in_flight
        if idle <= 0:
            return []
        sync_checks()  # tests and sites added or retired since the last tick
        everything = Check.objects.select_related("test", "site", "site__type", "server")
        reports = []
        for check in claim_due(everything, now=now, limit=idle, token=self.token):
            try:
                job = build_job(check)
            except ScriptError as error:
                reports.append(report_for(check, record(check, invalid_outcome(error))))
                continue
            self.in_flight[check.pk] = (check, mask(job.script.source, list(job.secrets)))
            self.pool.submit(job)
        return reports

    def collect(self, timeout: float) -> list[CheckReport]:
        """Wait up to ``timeout`` seconds for checks to finish; record them."""
        reports = []
        for job, outcome in self.pool.poll(timeout):
            check, source = self.in_flight.pop(job.key)
            reports.append(report_for(check, record(check, outcome, source=source)))
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

    def shutdown(self, grace: float, *, hurry: Callable[[], bool] = lambda: False) -> list[CheckReport]:
        """Give checks in flight ``grace`` seconds (until ``hurry()``) to
        finish and record them; kill the rest, record nothing for them, and
        release their claims so the next run takes them at once."""
        deadline = time.monotonic() + grace
        reports: list[CheckReport] = []
        while self.in_flight and not hurry() and (left := deadline - time.monotonic()) > 0:
            reports += self.collect(min(left, 0.2))
        self.pool.cancel()
        self.pool.close()
        self.in_flight.clear()
        release_claims(self.token)
        return reports

    def run(
        self,
        *,
        tick: float,
        stopping: Callable[[], bool],
        on_result: Callable[[CheckReport], None] = lambda report: None,
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
