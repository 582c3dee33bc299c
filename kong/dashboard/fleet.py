"""The fleet's live state, from ``Check`` rows: the matrix, rollups, lights
and the runner's heartbeat.

One row per (test, site[, server]) pair, so the index costs a fixed number
of queries however long the history grows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

from django.conf import settings
from django.db import connection
from django.db.models import CharField, ExpressionWrapper, F, Max
from django.utils import timezone

from kong import schedule
from kong.models import Check, Location, Site, Test
from kong.status import FAILING, CheckStatus, is_muted

# -- the fleet, from Check rows --------------------------------------------


@dataclass(frozen=True, slots=True)
class Ref:
    """A row of the inventory as the dashboard needs it: id, slug, name."""

    id: int
    slug: str
    name: str


@dataclass(frozen=True, slots=True)
class SiteRef(Ref):
    type: Ref | None = None


@dataclass(slots=True)  # not frozen: the index builds thousands, and frozen __init__ is slow
class CheckState:
    """One check's current state with its latest result's headline."""

    id: int
    site: SiteRef
    test: Ref
    server: Ref | None
    status: str
    status_since: datetime
    last_run_at: datetime | None
    consecutive_failures: int
    muted_until: datetime | None
    result_id: int | None
    duration: float | None
    failed_line: int | None
    reason: str
    location: Ref | None = None  # None: the default location

    @property
    def is_failing(self) -> bool:
        return self.status in FAILING

    @property
    def is_muted(self) -> bool:
        return is_muted(self.muted_until)


@dataclass
class Fleet:
    """Every active check on a live site, and which servers each site runs on."""

    checks: list[CheckState]
    site_servers: dict[int, list[Ref]]

    def filtered(self, filters: Filters) -> Fleet:
        """The same fleet, with only the checks ``filters`` match."""
        if not filters.active:
            return self
        return Fleet([check for check in self.checks if filters.matches(self, check)], self.site_servers)

    def servers_of(self, check: CheckState) -> list[Ref]:
        """The servers a check covers: its own, else all of its site's."""
        return [check.server] if check.server else self.site_servers.get(check.site.id, [])


_CHECK_FIELDS = (
    "pk", "site_id", "test_id", "server_id", "server__slug", "server__name", "status",
    "since", "last_run", "muted", "consecutive_failures",
    "last_result_id", "last_result__duration", "last_result__failed_line", "last_result__reason", "location_id",
)  # fmt: skip
# The default location (checks of sites with no location), in rollups and filters.
DEFAULT_LOCATION = Ref(0, "default", "Default location")
# The three timestamps come back raw (text on SQLite) and are parsed by _moment():
# Django's per-value converters cost more than the rest of the query at 2,000 rows.
_RAW_MOMENTS = {
    name: ExpressionWrapper(F(field), output_field=CharField())
    for name, field in (("since", "status_since"), ("last_run", "last_run_at"), ("muted", "muted_until"))
}


def _moment(value: datetime | str | None, zone: tzinfo | None) -> datetime | None:
    """A timestamp column as the database driver returns it (text, or a naive
    or aware datetime), as the datetime Django's converter would make: naive
    values are in ``zone`` (the connection's, when USE_TZ is on)."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if zone is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment


def load_fleet() -> Fleet:
    """The whole fleet's state in four queries, whatever the history size.

    Names and slugs come from small queries of their own rather than joined
    onto each of the thousands of check rows.
    """
    sites = {
        pk: SiteRef(pk, slug, name, Ref(type_id, type_slug, type_name) if type_id else None)
        for pk, slug, name, type_id, type_slug, type_name in Site.objects.filter(is_live=True)
        .order_by()
        .values_list("pk", "slug", "name", "type_id", "type__slug", "type__name")
    }
    tests = {pk: Ref(pk, slug, name) for pk, slug, name in Test.objects.active().values_list("pk", "slug", "name")}
    servers: dict[int, Ref] = {}
    site_servers: dict[int, list[Ref]] = defaultdict(list)
    through = Site.servers.through.objects.values_list("site_id", "server_id", "server__slug", "server__name")
    for site_id, server_id, slug, name in through.order_by("server__name"):
        server = servers.get(server_id)
        if server is None:
            server = servers[server_id] = Ref(server_id, slug, name)
        site_servers[site_id].append(server)
    # Inactive tests and dead sites are dropped below (they are not in tests/sites),
    # which spares this query two joins.
    rows = list(Check.objects.active().order_by().annotate(**_RAW_MOMENTS).values_list(*_CHECK_FIELDS))
    locations: dict[int, Ref] = {}
    if any(row[-1] for row in rows):  # a fleet without locations pays no query for them
        locations = {pk: Ref(pk, slug, name) for pk, slug, name in Location.objects.values_list("pk", "slug", "name")}
    zone = connection.timezone if settings.USE_TZ else None
    checks = []
    for (
        pk, site_id, test_id, server_id, server_slug, server_name, status, since, last_run, muted, failures,
        result_id, duration, failed_line, reason, location_id,
    ) in rows:  # fmt: skip
        if site_id not in sites or test_id not in tests:
            continue
        server = None
        if server_id:
            server = servers.get(server_id) or servers.setdefault(server_id, Ref(server_id, server_slug, server_name))
        checks.append(
            CheckState(
                pk, sites[site_id], tests[test_id], server, status, _moment(since, zone) or timezone.now(),
                last_run and _moment(last_run, zone), failures, muted and _moment(muted, zone),
                result_id, duration, failed_line, reason or "", locations.get(location_id) if location_id else None,
            )
        )
    return Fleet(checks, dict(site_servers))


# -- the matrix ------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """The index's filters, read from the query string."""

    type: str = ""
    server: str = ""
    q: str = ""
    location: str = ""  # a location's slug, or "default"

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filters:
        return cls(
            type=(query.get("type") or "").strip(),
            server=(query.get("server") or "").strip(),
            q=(query.get("q") or "").strip(),
            location=(query.get("location") or "").strip(),
        )

    @property
    def active(self) -> bool:
        return bool(self.type or self.server or self.q or self.location)

    def matches(self, fleet: Fleet, check: CheckState) -> bool:
        if self.type and (check.site.type is None or check.site.type.slug != self.type):
            return False
        if self.location and location_of(check).slug != self.location:
            return False
        if self.server and all(server.slug != self.server for server in fleet.servers_of(check)):
            return False
        if self.q:
            needle = self.q.casefold()
            return needle in check.site.name.casefold() or needle in check.site.slug.casefold()
        return True


@dataclass
class Rollup:
    """``failing`` of ``total`` checks failing within one Type or Server."""

    ref: Ref
    total: int = 0
    failing: int = 0


@dataclass
class Row:
    """One site: a list of checks (one per server, usually one) per column."""

    site: SiteRef
    cells: list[list[CheckState]]
    failing: int = 0


@dataclass
class Matrix:
    columns: list[Ref]
    rows: list[Row]
    failing: list[CheckState]
    total: int
    pending: int
    types: list[Rollup] = field(default_factory=list)
    servers: list[Rollup] = field(default_factory=list)
    # By location, when the fleet has any: "inside passes, outside fails" is the firewall.
    locations: list[Rollup] = field(default_factory=list)

    @property
    def passing(self) -> int:
        return self.total - len(self.failing) - self.pending


def build_matrix(fleet: Fleet, filters: Filters | None = None) -> Matrix:
    """Sites by tests for the checks matching ``filters``.

    Sites and tests with failing checks come first; rollups cover the
    whole fleet so that they can be used to filter it.
    """
    filters = filters or Filters()
    checks = [check for check in fleet.checks if filters.matches(fleet, check)] if filters.active else fleet.checks
    failing = [check for check in checks if check.is_failing]
    broken_tests = {check.test.id for check in failing}
    tests = {check.test.id: check.test for check in checks}
    columns = sorted(tests.values(), key=lambda test: (test.id not in broken_tests, test.name.casefold()))
    position = {test.id: index for index, test in enumerate(columns)}
    rows: dict[int, Row] = {}
    for check in sorted(checks, key=lambda check: check.server.name if check.server else ""):
        row = rows.get(check.site.id)
        if row is None:
            row = rows[check.site.id] = Row(check.site, [[] for _ in columns])
        row.cells[position[check.test.id]].append(check)
        row.failing += check.is_failing
    ordered = sorted(rows.values(), key=lambda row: (row.failing == 0, row.site.name.casefold()))
    failing.sort(key=lambda check: (check.site.name.casefold(), check.test.name.casefold()))
    return Matrix(
        columns=columns,
        rows=ordered,
        failing=failing,
        total=len(checks),
        pending=sum(check.status == CheckStatus.PENDING for check in checks),
        types=_rollups(fleet.checks, lambda check: [check.site.type] if check.site.type else []),
        servers=_rollups(fleet.checks, fleet.servers_of),
        locations=_rollups(fleet.checks, lambda check: [location_of(check)])
        if any(check.location for check in fleet.checks)
        else [],
    )


def location_of(check: CheckState) -> Ref:
    """Where a check runs from: its location, or the default one."""
    return check.location or DEFAULT_LOCATION


def _rollups(checks: Iterable[CheckState], groups_of: Callable[[CheckState], Sequence[Ref]]) -> list[Rollup]:
    rollups: dict[int, Rollup] = {}
    for check in checks:
        for ref in groups_of(check):
            rollup = rollups.get(ref.id)
            if rollup is None:
                rollup = rollups[ref.id] = Rollup(ref)
            rollup.total += 1
            rollup.failing += check.is_failing
    return sorted(rollups.values(), key=lambda rollup: (rollup.failing == 0, rollup.ref.name.casefold()))


@dataclass
class Light:
    """One site on the wallboard."""

    site: SiteRef
    total: int = 0
    failing: int = 0
    pending: int = 0
    worst: CheckState | None = None

    @property
    def status(self) -> str:
        if self.failing:
            return "failed"
        if self.pending == self.total:
            return "pending"
        return "passed"


def lights(fleet: Fleet) -> list[Light]:
    """One light per site, failing sites first."""
    by_site: dict[int, Light] = {}
    for check in fleet.checks:
        light = by_site.get(check.site.id)
        if light is None:
            light = by_site[check.site.id] = Light(check.site)
        light.total += 1
        light.pending += check.status == CheckStatus.PENDING
        if check.is_failing:
            light.failing += 1
            if light.worst is None or check.status_since < light.worst.status_since:
                light.worst = check
    return sorted(by_site.values(), key=lambda light: (not light.failing, light.site.name.casefold()))


# -- the runner's heartbeat ------------------------------------------------


@dataclass(frozen=True)
class Staleness:
    """Nothing has run for more than twice the shortest schedule."""

    last_run_at: datetime | None
    interval: timedelta

    @property
    def threshold(self) -> timedelta:
        return 2 * self.interval


def shortest_interval(schedules: Iterable[str], now: datetime) -> timedelta | None:
    """The shortest gap between two runs of any of ``schedules``."""
    gaps = []
    for expression in set(schedules):
        try:
            first = schedule.next_run(expression, now)
            gaps.append(schedule.next_run(expression, first) - first)
        except Exception:  # a bad schedule is a system check's business, not the banner's
            continue
    return min(gaps, default=None)


def runner_staleness(now: datetime | None = None) -> Staleness | None:
    """Staleness when checks exist but none ran within twice the shortest schedule."""
    now = now or timezone.now()
    tests = Test.objects.active().filter(checks__isnull=False).order_by()
    schedules = list(tests.values_list("schedule", flat=True).distinct())
    interval = shortest_interval(schedules, now)
    if interval is None:
        return None
    last_run = Check.objects.aggregate(last=Max("last_run_at"))["last"]
    if last_run is not None and now - last_run <= 2 * interval:
        return None
    return Staleness(last_run_at=last_run, interval=interval)
