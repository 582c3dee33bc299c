"""Plan which checks run, run them, record results and trigger alerts.

Commands, views and tasks call these functions; they never talk to twill or
send mail themselves.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from kong import pool, schedule
from kong.conf import kong_settings
from kong.models import Check, CheckQuerySet, Server, Site, Test, TestResult, Type
from kong.notifiers import Event, notify
from kong.runner import Job, Outcome
from kong.scripts import ScriptError, compile_script, context_for, mask, render


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



def claim_due(checks: models.QuerySet[Check], *, now: Any = None) -> models.QuerySet[Check]:
    """Atomically claim the due checks among ``checks`` for this run.

    One filtered UPDATE sets a lease and a token; a concurrent run's UPDATE
    skips rows already claimed, so no check runs twice for one slot. A
    crashed run's claims expire after ``KONG_CLAIM_LEASE`` seconds.
    """
    now = now or timezone.now()
    token = uuid.uuid4().hex
    until = now + timedelta(seconds=float(kong_settings.CLAIM_LEASE))
    Check.objects.filter(pk__in=checks.due(now).values("pk")).filter(
        Q(next_due_at__isnull=True) | Q(next_due_at__lte=now),
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now),
    ).update(claimed_until=until, claim_token=token)
    return checks.filter(claim_token=token)
