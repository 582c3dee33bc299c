"""Plan which checks run, run them, record results and trigger alerts.

Commands, views and tasks call these functions; they never talk to twill or
send mail themselves.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import DatabaseError, OperationalError, connections, models, transaction
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


def explain_database_error(error: DatabaseError) -> str:
    """One line that names a database problem for an operator (no traceback)."""
    message = " ".join(str(error).split()) or type(error).__name__
    lowered = message.lower()
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        return f"the database has no Kong tables yet ({message}): run manage.py migrate"
    if "locked" in lowered:
        return f"the database is locked by another writer ({message}); see the README on SQLite settings"
    return f"cannot use the database: {message}"


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
    """Create a Check row for every applicable pair, reactivate rows that
    apply again and deactivate rows that no longer apply.

    Rows are never deleted here: a pair that is switched off and on again
    keeps its mute and failure streak, so it does not alert anew.
    """
    wanted = applicable_keys()
    existing = {
        (test_id, site_id, server_id): (pk, active)
        for pk, test_id, site_id, server_id, active in Check.objects.values_list(
            "pk", "test_id", "site_id", "server_id", "is_active"
        )
    }
    missing = [
        Check(test_id=test_id, site_id=site_id, server_id=server_id)
        for test_id, site_id, server_id in wanted - existing.keys()
    ]
    if missing:
        Check.objects.bulk_create(missing, ignore_conflicts=True, batch_size=500)
    retired = [pk for key, (pk, active) in existing.items() if active and key not in wanted]
    revived = [pk for key, (pk, active) in existing.items() if not active and key in wanted]
    if retired:
        Check.objects.filter(pk__in=retired).update(is_active=False)
    if revived:
        Check.objects.filter(pk__in=revived).update(is_active=True)


def planned_checks() -> list[Check]:
    """Every check the inventory implies, as ``sync_checks`` would leave the
    table, without writing: existing rows, plus unsaved rows for new pairs.
    For ``--list`` and ``--dry-run``, which must not write."""
    wanted = applicable_keys()
    rows = Check.objects.select_related("test", "site", "site__type", "server")
    found = {(c.test_id, c.site_id, c.server_id): c for c in rows if (c.test_id, c.site_id, c.server_id) in wanted}
    new = wanted - found.keys()
    if new:
        tests = Test.objects.in_bulk({key[0] for key in new})
        sites = Site.objects.select_related("type").in_bulk({key[1] for key in new})
        servers = Server.objects.in_bulk({key[2] for key in new if key[2] is not None})
        for test_id, site_id, server_id in new:
            found[(test_id, site_id, server_id)] = Check(
                test=tests[test_id], site=sites[site_id], server=servers.get(server_id) if server_id else None
            )
    for check in found.values():
        check.is_active = True
    return list(found.values())


def select_checks(
    *,
    tests: Sequence[str] = (),
    sites: Sequence[str] = (),
    types: Sequence[str] = (),
    servers: Sequence[str] = (),
) -> CheckQuerySet:
    """The active checks matching every given selector (slugs), after
    ``sync_checks``. Raises KongError for an unknown slug, or when explicit
    selectors match nothing."""
    _require_slugs(Test, tests, "test")
    _require_slugs(Site, sites, "site")
    _require_slugs(Type, types, "type")
    _require_slugs(Server, servers, "server")
    sync_checks()
    checks = Check.objects.active().select_related("test", "site", "site__type", "server")
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


def preview_checks(
    *,
    tests: Sequence[str] = (),
    sites: Sequence[str] = (),
    types: Sequence[str] = (),
    servers: Sequence[str] = (),
    due: bool = False,
) -> list[Check]:
    """What ``select_checks`` (and with ``due``, a ``--due`` run) would run,
    read without writing anything. Raises KongError like ``select_checks``."""
    _require_slugs(Test, tests, "test")
    _require_slugs(Site, sites, "site")
    _require_slugs(Type, types, "type")
    _require_slugs(Server, servers, "server")
    server_sites: dict[int, set[str]] = {}
    if servers:
        for site_id, slug in Site.servers.through.objects.values_list("site_id", "server__slug"):
            server_sites.setdefault(site_id, set()).add(slug)

    def wanted(check: Check) -> bool:
        site_type = check.site.type.slug if check.site.type else None
        via = {check.server.slug} if check.server else server_sites.get(check.site_id, set())
        return (
            (not tests or check.test.slug in tests)
            and (not sites or check.site.slug in sites)
            and (not types or site_type in types)
            and (not servers or bool(via & set(servers)))
        )

    checks = [check for check in planned_checks() if wanted(check)]
    if (tests or sites or types or servers) and not checks:
        raise KongError(_explain_empty(tests, sites, types, servers))
    if due:
        now = timezone.now()
        checks = [check for check in checks if check.is_due(now)]
    return sorted(checks, key=lambda c: (c.site.name, c.test.name, c.server.name if c.server else ""))


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


def record(check: Check, outcome: Outcome, *, source: str = "", token: str = "") -> TestResult | None:
    """Store one TestResult and fold it into the Check row, in one
    transaction; see ``record_many``. Returns the result, or None when the
    run no longer holds ``token``'s claim on the check."""
    return record_many([(check, outcome, source)], token=token)[0]


def record_many(items: Sequence[tuple[Check, Outcome, str]], *, token: str = "") -> list[TestResult | None]:
    """Store a TestResult per ``(check, outcome, masked source)`` and fold
    each into its Check row, all in one transaction: every result and its
    state change land together or not at all.

    ``token`` is the claim the recording run holds ('' for a run that
    claimed nothing, such as a plain ``check_sites``). A claim belongs to its
    token: a claimed run clears only its own claims, and records nothing for
    a check whose claim it lost (it expired and another run took it over, or
    it was released), because that run records the slot. An unclaimed run
    records and leaves every claim alone. Recording the same claimed item
    twice therefore stores it once.

    A run writes its results in small batches through this (one INSERT, one
    locking read and one UPDATE per batch rather than per check), which keeps
    the parent process, the one step a pool cannot parallelise, cheap.
    Alerts go out after the commit. Returns the results in ``items`` order,
    None where nothing was recorded.
    """
    now = timezone.now()
    with transaction.atomic():
        # Lock the state rows in pk order (no joins: FOR UPDATE locks the
        # Check rows only). A check whose row is gone keeps its result.
        states = {
            state.pk: state
            for state in Check.objects.select_for_update().filter(pk__in=[c.pk for c, _, _ in items]).order_by("pk")
        }
        kept = [
            (check, outcome, source)
            for check, outcome, source in items
            if not token or (check.pk in states and states[check.pk].claim_token == token)
        ]
        if len(kept) < len(items):
            logger.warning("kong: %d result(s) not recorded: their claim was taken over", len(items) - len(kept))
        results = [_new_result(check, outcome, source, now) for check, outcome, source in kept]
        TestResult.objects.bulk_create(results)
        changed: list[Check] = []
        for (check, _, _), result in zip(kept, results, strict=True):
            state = states.get(check.pk)
            if state is None:
                continue
            transition = state.apply_result(result)
            if token:  # an unclaimed run leaves other runs' claims alone
                state.claimed_until = None
                state.claim_token = ""
            state.next_due_at = schedule.next_run(check.test.schedule, now)
            changed.append(state)
            if transition.alert:
                event = Event(kind=transition.alert, check=state, result=result)
                transaction.on_commit(partial(notify, event))
        _save_states(changed)
    by_item = {id(item[0]): result for item, result in zip(kept, results, strict=True)}
    return [by_item.get(id(check)) for check, _, _ in items]


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
    token: str = "",
    on_result: Callable[[CheckReport, int, int], None] | None = None,
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
    """
    started = timezone.now()
    checks = list(checks)
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
        results = _record_retrying(batch, token)
        for (check, _, _), result in zip(batch, results, strict=True):
            recorded.add(check.pk)
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

    jobs: list[Job] = []
    try:
        for check in checks:
            try:
                job = build_job(check, timeout=timeout)
            except ScriptError as error:
                keep(check, invalid_outcome(error))
                continue
            sources[check.pk] = mask(job.script.source, list(job.secrets))
            jobs.append(job)
        size = kong_settings.WORKERS if workers is None else workers
        for job, outcome in _run_jobs(jobs, size, lease):
            keep(by_key[job.key], outcome)
    finally:  # also on Ctrl-C or a database error: what finished is recorded, the rest is due again at once
        try:
            if pending:
                flush()
        finally:
            if token:
                release_claims(token, [check.pk for check in checks if check.pk not in recorded])
    if callback_error is not None:
        raise callback_error
    # Report in the order asked for, not the order the pool finished in.
    report = RunReport(results=[done[check.pk] for check in checks if check.pk in done])
    report.duration_ms = (timezone.now() - started).total_seconds() * 1000
    return report


def _run_jobs(jobs: list[Job], size: int, lease: LeaseKeeper) -> Iterator[tuple[Job, Outcome]]:
    """Run ``jobs`` in a pool of ``size`` workers (0: inline), renewing the
    run's leases between results, at least every ``lease.interval`` seconds."""
    if size <= 0 or not jobs:
        for job, outcome in pool.run_jobs(jobs, 0):
            lease.renew_if_due()
            yield job, outcome
        return
    with pool.WorkerPool(min(size, len(jobs)), **pool_options()) as workers:
        for job in jobs:
            workers.submit(job)
        try:
            while workers.in_flight:
                lease.renew_if_due()
                yield from workers.poll(lease.interval)
        finally:
            if workers.in_flight:  # abandoned mid-run (Ctrl-C, SIGTERM, an error)
                workers.cancel()


def pool_options() -> dict[str, Any]:
    """The ``WorkerPool`` options every run uses, from settings."""
    return {
        "kill_grace": float(kong_settings.KILL_GRACE),
        "max_checks_per_worker": int(kong_settings.MAX_CHECKS_PER_WORKER),
    }


# How often, and how long, recording retries when SQLite reports the
# database locked by another writer (a WAL database with
# "transaction_mode": "IMMEDIATE" rarely needs it).
LOCKED_RETRIES = 5
LOCKED_PAUSE = 0.2


def _record_retrying(batch: list[tuple[Check, Outcome, str]], token: str) -> list[TestResult | None]:
    for attempt in range(LOCKED_RETRIES):
        try:
            return record_many(batch, token=token)
        except OperationalError as error:
            if "locked" not in str(error) or attempt == LOCKED_RETRIES - 1:
                raise
            time.sleep(LOCKED_PAUSE * (attempt + 1))
    raise AssertionError("unreachable")


def run_check(check_id: int, *, token: str = "") -> dict[str, Any] | None:
    """Run one check in an isolated worker process and record it; returns
    the CheckReport as a dict, or None when ``token`` no longer holds its
    claim. The unit of work for Django Tasks."""
    check = Check.objects.select_related("test", "site", "site__type", "server").get(pk=check_id)
    report = run_checks([check], workers=1, token=token)
    return asdict(report.results[0]) if report.results else None


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


# -- claims ----------------------------------------------------------------


def new_token() -> str:
    return uuid.uuid4().hex


def claim_due(
    checks: CheckQuerySet,
    *,
    now: datetime | None = None,
    limit: int | None = None,
    token: str | None = None,
) -> CheckQuerySet:
    """Atomically claim the due checks among ``checks`` (at most ``limit``,
    most overdue first) with ``token`` and return exactly those: never a
    check the token already held before this call, so a long-lived claimer
    (the scheduler) never starts a check that is still in flight.

    One filtered UPDATE sets a lease and the token, and repeats the due and
    unclaimed conditions, so a concurrent run's UPDATE (PostgreSQL re-checks
    them on rows another transaction just claimed; SQLite runs writers one at
    a time) skips rows already claimed: no check runs twice for one slot. A
    crashed run's claims expire after ``KONG_CLAIM_LEASE`` seconds; a
    live claimer keeps its own alive with ``renew_claims``.
    """
    now = now or timezone.now()
    token = token or new_token()
    due = checks.due(now).order_by(F("next_due_at").asc(nulls_first=True), "pk").values_list("pk", flat=True)
    # A list, as some databases refuse LIMIT in IN (...).
    candidates = list(due if limit is None else due[: max(0, limit)])
    claimed: list[int] = []
    for start in range(0, len(candidates), 500):  # keep IN (...) under every database's limit
        chunk = candidates[start : start + 500]
        unclaimed = Check.objects.filter(pk__in=chunk).filter(
            Q(next_due_at__isnull=True) | Q(next_due_at__lte=now),
            Q(claimed_until__isnull=True) | Q(claimed_until__lt=now),
            is_active=True,
        )
        if unclaimed.update(claimed_until=now + _lease(), claim_token=token):
            claimed += chunk
    return checks.filter(pk__in=claimed, claim_token=token) if claimed else checks.none()


def claim_checks(pks: Iterable[int], *, token: str, now: datetime | None = None) -> list[int]:
    """Claim these checks whether due or not (run-now), skipping any that
    another run holds a live claim on; returns the pks claimed."""
    now = now or timezone.now()
    pks = list(pks)
    free = Check.objects.filter(pk__in=pks).filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
    free.update(claimed_until=now + _lease(), claim_token=token)
    return list(Check.objects.filter(pk__in=pks, claim_token=token).values_list("pk", flat=True))


def renew_claims(tokens: str | Iterable[str], now: datetime | None = None) -> int:
    """Extend the lease of every check still claimed with ``tokens``; returns how many."""
    now = now or timezone.now()
    tokens = [tokens] if isinstance(tokens, str) else list(tokens)
    if not tokens:
        return 0
    return Check.objects.filter(claim_token__in=tokens).update(claimed_until=now + _lease())


def release_claims(token: str, pks: Iterable[int] | None = None) -> int:
    """Give up claims made with ``token`` (only ``pks``, if given) without
    recording anything: the checks stay due and the next run takes them."""
    claimed = Check.objects.filter(claim_token=token)
    if pks is not None:
        claimed = claimed.filter(pk__in=list(pks))
    return claimed.update(claimed_until=None, claim_token="")


class LeaseKeeper:
    """Renews a run's claims on a timer: ``renew_if_due()`` is called from
    the run's loop, which never waits longer than ``interval`` seconds, so a
    lease is renewed well before it can expire, however long one check runs.
    A renewal that fails (the database is away) is retried next time."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.tokens = [token for token in tokens if token]
        self.interval = max(0.5, float(kong_settings.CLAIM_LEASE) / 4)
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


def _lease() -> timedelta:
    return timedelta(seconds=float(kong_settings.CLAIM_LEASE))
