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
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import connections, models, transaction
from django.db.models import F, Q
from django.utils import timezone

from kong import pool, schedule
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
    if (tests or sites or types or servers) and not checks.exists():
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
    return record_many([(check, outcome, source)])[0]


def record_many(items: Sequence[tuple[Check, Outcome, str]]) -> list[TestResult]:
    """Store a TestResult per ``(check, outcome, masked source)`` and fold
    each into its Check row, all in one transaction: every result and its
    state change land together or not at all.

    A run writes its results in small batches through this (one INSERT, one
    locking read and one UPDATE per batch rather than per check), which keeps
    the parent process, the one step a pool cannot parallelise, cheap.
    Alerts go out after the commit. Returns the results, in ``items`` order.
    """
    now = timezone.now()
    results = [_new_result(check, outcome, source, now) for check, outcome, source in items]
    with transaction.atomic():
        TestResult.objects.bulk_create(results)
        # Lock the state rows in pk order (no joins: FOR UPDATE locks the
        # Check rows only). A check that sync_checks dropped mid-run keeps
        # its result and has no state to update.
        states = {
            state.pk: state
            for state in Check.objects.select_for_update().filter(pk__in=[c.pk for c, _, _ in items]).order_by("pk")
        }
        changed: list[Check] = []
        for (check, _, _), result in zip(items, results, strict=True):
            state = states.get(check.pk)
            if state is None:
                continue
            transition = state.apply_result(result)
            state.claimed_until = None
            state.claim_token = ""
            state.next_due_at = schedule.next_run(check.test.schedule, now)
            changed.append(state)
            if transition.alert:
                event = Event(kind=transition.alert, check=state, result=result)
                transaction.on_commit(partial(notify, event))
        _save_states(changed)
    return results


# What recording a result changes on a Check row.
STATE_FIELDS = [
    "status",
    "status_since",
    "last_result",
    "last_run_at",
    "consecutive_failures",
    "claimed_until",
    "claim_token",
    "next_due_at",
]


def _save_states(states: Sequence[Check]) -> None:
    """UPDATE each state row's ``STATE_FIELDS`` with one ``executemany``.

    ``bulk_update`` builds a CASE expression per field and row, which cost
    about 3 ms of CPU per check, more than running the check itself.
    """
    if not states:
        return
    connection = connections[Check.objects.db]
    quote = connection.ops.quote_name
    fields: list[Any] = [Check._meta.get_field(name) for name in STATE_FIELDS]
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    sql = f"UPDATE {quote(Check._meta.db_table)} SET {assignments} WHERE {quote('id')} = %s"
    rows = [
        [field.get_db_prep_save(getattr(state, field.attname), connection) for field in fields] + [state.pk]
        for state in states
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _new_result(check: Check, outcome: Outcome, source: str, now: datetime) -> TestResult:
    secrets = check.site.secret_values()
    reason = mask(outcome.reason, secrets)
    content = mask(outcome.log, secrets)
    if reason:
        content = f"{content.rstrip()}\n\n{outcome.status.upper()}: {reason}\n".lstrip()
    return TestResult(
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

    pending: list[tuple[Check, Outcome, str]] = []
    last_flush = float("-inf")  # a slow stream of results is written as each arrives
    # Checks claimed by `check_sites --due` keep their lease alive while the
    # run lasts, so a long run never lets another run claim them again.
    tokens = {check.claim_token for check in checks if check.claim_token}
    renewed = time.monotonic()

    def flush() -> None:
        nonlocal renewed
        if tokens and time.monotonic() - renewed > float(kong_settings.CLAIM_LEASE) / 3:
            for token in tokens:
                renew_claims(token)
            renewed = time.monotonic()
        results = record_many(pending)
        for (check, _, _), result in zip(pending, results, strict=True):
            done[check.pk] = item = report_for(check, result)
            if on_result:
                on_result(item, len(done), total)
        pending.clear()

    def keep(check: Check, outcome: Outcome) -> None:
        nonlocal last_flush
        pending.append((check, outcome, sources.get(check.pk, "")))
        if len(pending) >= RECORD_BATCH or time.monotonic() - last_flush >= RECORD_DELAY:
            flush()
            last_flush = time.monotonic()

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
    try:
        for job, outcome in pool.run_jobs(
            jobs,
            size,
            kill_grace=float(kong_settings.KILL_GRACE),
            max_checks_per_worker=int(kong_settings.MAX_CHECKS_PER_WORKER),
        ):
            keep(by_key[job.key], outcome)
    finally:  # also on Ctrl-C: what finished is recorded, the rest is due again at once
        if pending:
            flush()
        for token in tokens:
            release_claims(token, [check.pk for check in checks if check.pk not in done])
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
