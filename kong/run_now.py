"""Run-now: run checks at an operator's request, never inside the request.

A web request must not run a check itself. Off the main thread no alarm can
interrupt a script, twill's global state makes such checks queue behind one
another, and with safe mode off a script would execute Python inside the web
server. So run-now only *claims* the checks, with the same lease that the
scheduler and ``check_sites --due`` respect, so that no two runs ever
overlap. It then starts ``manage.py kong_run`` in a session of its own. That
process runs the checks through ``services.run_checks``, like every other
path: forked workers, the three timeout layers, and recording.

The request answers at once with a *ticket*: a signed list of (check, claim
token, latest result when asked). The pending page reads the ticket to tell
whether the run is still going, has recorded its result, or ended without
one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.utils import timezone

from kong import services
from kong.conf import kong_settings
from kong.models import Check, Site, Test, TestResult

SALT = "kong.run_now"


class RunNowError(Exception):
    """The run could not be started; no claim is left behind."""


class BadTicket(Exception):
    """A pending-page ticket that Kong did not sign, or cannot read."""


@dataclass(frozen=True)
class Entry:
    """One check a run-now is waiting for."""

    check_id: int
    token: str  # the claim of the run that runs it: this request's, or one already in flight
    seen: int | None  # the check's latest result when run-now was asked


@dataclass(frozen=True)
class Started:
    ticket: str  # for the pending page
    started: list[int]  # the checks this request claimed and handed to ``kong_run``
    in_flight: list[int]  # the checks another run already held; they are not started twice


@dataclass
class Progress:
    """Where one check of a run-now stands."""

    check: Check
    running: bool  # the run still holds a live claim on it
    result: TestResult | None  # the result recorded since run-now was asked

    @property
    def lost(self) -> bool:
        """The run is over but recorded nothing: its claim expired or was released."""
        return not self.running and self.result is None


# Run-now is rate-limited per user: at most RATE_LIMIT starts in any
# RATE_WINDOW seconds. Counted in Django's default cache, so the limit is per
# web process unless the project configures a shared cache (Redis, Memcached,
# the database cache).
RATE_LIMIT = 10
RATE_WINDOW = 60


def allowed(user_id: int, now: float | None = None) -> bool:
    """Count one run-now by ``user_id``; False when the user is over the limit."""
    window = int((time.time() if now is None else now) // RATE_WINDOW)
    key = f"kong:run-now:{user_id}:{window}"
    cache.add(key, 0, timeout=RATE_WINDOW * 2)
    try:
        count = cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=RATE_WINDOW * 2)
        count = 1
    return count <= RATE_LIMIT


class NothingToRun(Exception):
    """The test does not apply to the site (or not through that server)."""


def checks_for(site: Site, test: Test, server: str = "") -> list[int]:
    """The ids of ``test``'s active checks on ``site`` (only through the
    server with slug ``server``, if given), syncing first when the test or
    site is newer than the last sync. Raises NothingToRun when there are none."""
    checks = Check.objects.active().filter(site=site, test=test).order_by("server__name")
    if not checks.exists():
        services.sync_checks()
    if server:
        checks = checks.filter(server__slug=server)
    ids = list(checks.values_list("pk", flat=True))
    if not ids:
        raise NothingToRun(f"{test.name} does not apply to {site.name}")
    return ids


def start(check_ids: Sequence[int]) -> Started:
    """Claim ``check_ids`` and start ``kong_run`` on the ones claimed.

    A check that another run holds a live claim on (the scheduler, a
    ``--due`` run, another run-now) is not started again: the ticket follows
    that run instead. Returns at once. Raises RunNowError, with this call's
    claims released, when the process cannot be started.
    """
    seen = dict(Check.objects.filter(pk__in=check_ids).values_list("pk", "last_result_id"))
    token = services.new_token()
    claimed = set(services.claim_checks(check_ids, token=token))
    others = [pk for pk in check_ids if pk not in claimed]
    holders = dict(Check.objects.filter(pk__in=others).values_list("pk", "claim_token"))
    if claimed:
        try:
            launch(token, sorted(claimed))
        except (OSError, RunNowError) as error:
            services.release_claims(token)
            raise RunNowError(str(error)) from error
    entries = [Entry(pk, token if pk in claimed else holders.get(pk, ""), seen.get(pk)) for pk in check_ids]
    return Started(
        ticket=ticket(entries),
        started=[pk for pk in check_ids if pk in claimed],
        in_flight=[pk for pk in check_ids if pk not in claimed],
    )


def command(token: str, check_ids: Iterable[int]) -> list[str]:
    """The command line that runs the checks ``token`` claimed."""
    return [sys.executable, "-m", "django", "kong_run", "--token", token, *(str(pk) for pk in check_ids)]


def launch(token: str, check_ids: Iterable[int]) -> None:
    """Start ``kong_run`` detached: in a new session, so that stopping or
    reloading the web server does not cut the run short, and with this
    process's settings module and import path. Raises OSError, or RunNowError
    when the settings were configured in code and no other process can load
    them."""
    # manage.py --settings sets the environment too; under override_settings
    # (tests) settings.SETTINGS_MODULE reads None.
    module = os.environ.get("DJANGO_SETTINGS_MODULE") or settings.SETTINGS_MODULE
    if not module:
        raise RunNowError("Django was configured without a settings module, so no process can load it")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": module,
        "PYTHONPATH": os.pathsep.join(entry for entry in sys.path if entry),
    }
    process = subprocess.Popen(
        command(token, check_ids),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    # Reap the process when it ends, so a long-lived web server keeps no zombies.
    threading.Thread(target=process.wait, name=f"kong-run-{process.pid}", daemon=True).start()


def run(token: str, check_ids: Iterable[int]) -> services.RunReport:
    """``kong_run``'s work: run the checks among ``check_ids`` that ``token``
    still holds a live claim on, in worker processes (at least one, even with
    ``KONG_WORKERS = 0``), and record them. The run renews its leases while it
    lasts and releases what it did not record."""
    checks = Check.objects.filter(
        pk__in=list(check_ids), claim_token=token, claimed_until__gte=timezone.now()
    ).select_related("test", "site", "site__type", "server")
    return services.run_checks(checks, workers=max(1, kong_settings.WORKERS), token=token)


def ticket(entries: Iterable[Entry]) -> str:
    """A signed, URL-safe ticket for the pending page to follow ``entries``."""
    return signing.dumps([[e.check_id, e.token, e.seen] for e in entries], salt=SALT, compress=True)


def read_ticket(value: str) -> list[Entry]:
    """The entries of a ``ticket``. Raises BadTicket for one Kong did not sign."""
    try:
        data: Any = signing.loads(value, salt=SALT)
        return [Entry(int(pk), str(token), None if seen is None else int(seen)) for pk, token, seen in data]
    except (signing.BadSignature, TypeError, ValueError) as error:
        raise BadTicket(str(error)) from error


def progress(entries: Sequence[Entry], now: datetime | None = None) -> list[Progress]:
    """Where each check of a run-now stands, in ticket order; checks deleted
    since are left out.

    A check is running while its run's claim is live. Once the claim is gone,
    its latest result counts as the run's result if it is newer than the one
    seen when run-now was asked; otherwise the run recorded nothing.
    """
    now = now or timezone.now()
    checks = (
        Check.objects.select_related("test", "site", "server", "last_result")
        .defer("last_result__content", "last_result__script")
        .in_bulk([entry.check_id for entry in entries])
    )
    rows: list[Progress] = []
    for entry in entries:
        check = checks.get(entry.check_id)
        if check is None:
            continue
        running = (
            bool(entry.token)
            and check.claim_token == entry.token
            and check.claimed_until is not None
            and check.claimed_until >= now
        )
        fresh = not running and check.last_result_id is not None and check.last_result_id != entry.seen
        rows.append(Progress(check=check, running=running, result=check.last_result if fresh else None))
    return rows
