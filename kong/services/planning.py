"""Which checks a run covers: the pairs the inventory implies, kept in sync
as Check rows, and selected by slug."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import DatabaseError, models
from django.db.models import Q
from django.utils import timezone

from kong.models import Check, CheckQuerySet, Location, Server, Site, Test, Type

# A check's key: (test_id, site_id, server_id, location_id); server and
# location are None for a check through no one server, from the default location.
Key = tuple[int, int, int | None, int | None]


class KongError(Exception):
    """Kong cannot run: unknown slug, nothing to check, bad configuration."""


def explain_database_error(error: DatabaseError) -> str:
    """One line that names a database problem for an operator (no traceback)."""
    message = " ".join(str(error).split()) or type(error).__name__
    lowered = message.lower()
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        return f"the database has no Kong tables yet ({message}): run manage.py migrate"
    if "locked" in lowered:
        return f"the database is locked by another writer ({message}); see the README on SQLite settings"
    return f"cannot use the database: {message}"


def applicable_keys() -> set[Key]:
    """``(test_id, site_id, server_id, location_id)`` for every check the
    inventory implies: a site with locations is checked once from each
    active one, a site with none from the default location (None)."""
    tests = Test.objects.active()
    per_server = set(tests.filter(per_server=True).values_list("pk", flat=True))
    pairs = tests.applicable_pairs()
    servers: dict[int, list[int]] = {}
    if per_server:
        for site_id, server_id in Site.servers.through.objects.filter(server__is_active=True).values_list(
            "site_id", "server_id"
        ):
            servers.setdefault(site_id, []).append(server_id)
    located: set[int] = set()
    locations: dict[int, list[int]] = {}
    for site_id, location_id, active in Site.locations.through.objects.values_list(
        "site_id", "location_id", "location__is_active"
    ):
        located.add(site_id)
        if active:
            locations.setdefault(site_id, []).append(location_id)
    keys: set[Key] = set()
    for test_id, site_id in pairs:
        # A site whose locations are all inactive is checked from none of them.
        wheres: list[int | None] = list(locations.get(site_id, [])) if site_id in located else [None]
        vias: list[int | None] = (
            list(servers[site_id]) if test_id in per_server and servers.get(site_id) else [None]
        )
        keys.update((test_id, site_id, via, where) for via in vias for where in wheres)
    return keys


def sync_checks() -> None:
    """Create a Check row for every applicable pair, reactivate rows that
    apply again and deactivate rows that no longer apply.

    Rows are never deleted here: a pair that is switched off and on again
    keeps its mute and failure streak, so it does not alert anew.
    """
    wanted = applicable_keys()
    existing = {
        (test_id, site_id, server_id, location_id): (pk, active)
        for pk, test_id, site_id, server_id, location_id, active in Check.objects.values_list(
            "pk", "test_id", "site_id", "server_id", "location_id", "is_active"
        )
    }
    missing = [
        Check(test_id=test_id, site_id=site_id, server_id=server_id, location_id=location_id)
        for test_id, site_id, server_id, location_id in wanted - existing.keys()
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
    rows = Check.objects.select_related(*CHECK_RELATED)
    found = {key: c for c in rows if (key := (c.test_id, c.site_id, c.server_id, c.location_id)) in wanted}
    new = wanted - found.keys()
    if new:
        tests = Test.objects.in_bulk({key[0] for key in new})
        sites = Site.objects.select_related("type").in_bulk({key[1] for key in new})
        servers = Server.objects.in_bulk({key[2] for key in new if key[2] is not None})
        locations = Location.objects.in_bulk({key[3] for key in new if key[3] is not None})
        for test_id, site_id, server_id, location_id in new:
            found[(test_id, site_id, server_id, location_id)] = Check(
                test=tests[test_id],
                site=sites[site_id],
                server=servers.get(server_id) if server_id else None,
                location=locations.get(location_id) if location_id else None,
            )
    for check in found.values():
        check.is_active = True
    return list(found.values())


# What a run reads of each check (one query).
CHECK_RELATED = ("test", "site", "site__type", "server", "location")


def select_checks(
    *,
    tests: Sequence[str] = (),
    sites: Sequence[str] = (),
    types: Sequence[str] = (),
    servers: Sequence[str] = (),
    locations: Sequence[str] = (),
) -> CheckQuerySet:
    """The active checks matching every given selector (slugs), after
    ``sync_checks``. Raises KongError for an unknown slug, or when explicit
    selectors match nothing."""
    _require_slugs(Test, tests, "test")
    _require_slugs(Site, sites, "site")
    _require_slugs(Type, types, "type")
    _require_slugs(Server, servers, "server")
    _require_slugs(Location, locations, "location")
    sync_checks()
    checks = Check.objects.active().select_related(*CHECK_RELATED)
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
    if locations:
        checks = checks.filter(location__slug__in=locations)
    if (tests or sites or types or servers or locations) and not checks.exists():
        raise KongError(_explain_empty(tests, sites, types, servers, locations))
    return checks.order_by("site__name", "test__name", "server__name", "location__name")


def preview_checks(
    *,
    tests: Sequence[str] = (),
    sites: Sequence[str] = (),
    types: Sequence[str] = (),
    servers: Sequence[str] = (),
    locations: Sequence[str] = (),
    due: bool = False,
) -> list[Check]:
    """What ``select_checks`` (and with ``due``, a ``--due`` run) would run,
    read without writing anything. Raises KongError like ``select_checks``."""
    _require_slugs(Test, tests, "test")
    _require_slugs(Site, sites, "site")
    _require_slugs(Type, types, "type")
    _require_slugs(Server, servers, "server")
    _require_slugs(Location, locations, "location")
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
            and (not locations or (check.location is not None and check.location.slug in locations))
        )

    checks = [check for check in planned_checks() if wanted(check)]
    if (tests or sites or types or servers or locations) and not checks:
        raise KongError(_explain_empty(tests, sites, types, servers, locations))
    if due:
        now = timezone.now()
        checks = [check for check in checks if check.is_due(now)]
    return sorted(
        checks,
        key=lambda c: (c.site.name, c.test.name, c.server.name if c.server else "", c.location.name if c.location else ""),
    )


def _require_slugs(model: type[models.Model], slugs: Sequence[str], noun: str) -> None:
    if not slugs:
        return
    known = set(model._default_manager.filter(slug__in=slugs).values_list("slug", flat=True))
    unknown = [slug for slug in slugs if slug not in known]
    if unknown:
        raise KongError(f"unknown {noun} {', '.join(repr(slug) for slug in unknown)}")


def _explain_empty(
    tests: Sequence[str], sites: Sequence[str], types: Sequence[str], servers: Sequence[str], locations: Sequence[str] = ()
) -> str:
    inactive = list(Test.objects.filter(slug__in=tests, is_active=False).values_list("slug", flat=True))
    if inactive:
        return f"test {', '.join(map(repr, inactive))} is not active"
    dead = list(Site.objects.filter(slug__in=sites, is_live=False).values_list("slug", flat=True))
    if dead:
        return f"site {', '.join(map(repr, dead))} is not live"
    asked = ", ".join(
        f"{noun} {', '.join(map(repr, slugs))}"
        for noun, slugs in (
            ("test", tests), ("site", sites), ("type", types), ("server", servers), ("location", locations)
        )
        if slugs
    )
    return f"no checks match {asked}: no active test applies to a live site there"
