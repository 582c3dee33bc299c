"""check_sites --due: what is due, atomic claims with a lease, and overlapping runs.

The overlap tests start three real ``check_sites --due`` processes at once
against the test database (a SQLite file, or PostgreSQL with
``KONG_TEST_DATABASE=postgres``), so their data must be committed:
``transaction=True``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.test import override_settings
from django.utils import timezone

from kong import services
from kong.models import Check, TestResult
from tests.factories import make_site, make_test, make_type

ROOT = Path(__file__).resolve().parent.parent
ON_POSTGRES = os.environ.get("KONG_TEST_DATABASE") == "postgres"


def manage_env() -> dict[str, str]:
    """Environment for a ``python -m django`` subprocess on the test database."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if ON_POSTGRES:
        env["PGDATABASE"] = str(connection.settings_dict["NAME"])
    else:
        env["KONG_SQLITE_PATH"] = str(connection.settings_dict["NAME"])
    return env


def start_check_sites(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "django", "check_sites", "--settings=tests.settings", *args],
        cwd=ROOT,
        env=manage_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def fleet(web, sites: int, *, schedule: str = "*/10 * * * *") -> None:
    news = make_type("news")
    for number in range(sites):
        make_site(f"site{number}", web.host, type=news)
    make_test(
        "front-page", body='go {{ site.url }}\ncode 200\nfind "Latest News"', types=[news], schedule=schedule
    )
    services.sync_checks()


def run_due(**kwargs):
    token = services.new_token()
    return services.run_checks(services.claim_due(services.select_checks(), token=token), workers=0, token=token, **kwargs)


# -- what is due ---------------------------------------------------------------


@pytest.mark.django_db
def test_a_check_that_never_ran_is_due_at_once_and_then_waits_for_its_slot(web):
    fleet(web, 1)
    assert len(run_due().results) == 1
    check = Check.objects.get()
    assert check.next_due_at > timezone.now()
    assert check.claimed_until is None
    assert check.claim_token == ""
    assert run_due().results == []  # not due again until the next slot
    assert TestResult.objects.count() == 1


@pytest.mark.django_db
def test_after_a_long_outage_a_check_runs_once_not_once_per_missed_slot(web):
    fleet(web, 1)
    Check.objects.update(next_due_at=timezone.now() - timedelta(days=3))  # ~430 missed slots
    assert len(run_due().results) == 1
    assert run_due().results == []
    assert TestResult.objects.count() == 1
    assert Check.objects.get().next_due_at > timezone.now()


@pytest.mark.django_db
def test_only_due_checks_are_claimed(web):
    fleet(web, 3)
    now = timezone.now()
    first, second, third = Check.objects.order_by("pk")
    Check.objects.filter(pk=first.pk).update(next_due_at=now - timedelta(minutes=1))
    Check.objects.filter(pk=second.pk).update(next_due_at=now + timedelta(minutes=1))
    claimed = list(services.claim_due(Check.objects.all(), now=now))
    assert {check.pk for check in claimed} == {first.pk, third.pk}  # third never ran: due


@pytest.mark.django_db
def test_a_claim_is_exclusive_until_its_lease_expires(web):
    fleet(web, 2)
    now = timezone.now()
    assert services.claim_due(Check.objects.all(), now=now).count() == 2
    assert services.claim_due(Check.objects.all(), now=now + timedelta(seconds=60)).count() == 0
    # The run that claimed them crashed; after the lease the next run takes them.
    later = now + timedelta(seconds=301)
    retaken = services.claim_due(Check.objects.all(), now=later)
    assert retaken.count() == 2
    assert all(check.claimed_until == later + timedelta(seconds=300) for check in retaken)


@pytest.mark.django_db
@override_settings(KONG_CLAIM_LEASE=1)
def test_a_crashed_runs_claims_are_picked_up_after_the_lease(web):
    fleet(web, 1)
    services.claim_due(Check.objects.all())  # ...and the process dies before recording
    assert run_due().results == []
    Check.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert len(run_due().results) == 1


@pytest.mark.django_db
def test_limit_claims_the_most_overdue_first_and_release_and_renew_keep_to_their_token(web):
    fleet(web, 3)
    now = timezone.now()
    checks = list(Check.objects.order_by("pk"))
    for minutes, check in zip((5, 50, 1), checks, strict=True):
        Check.objects.filter(pk=check.pk).update(next_due_at=now - timedelta(minutes=minutes))
    mine = services.claim_due(Check.objects.all(), now=now, limit=2, token="mine")
    assert {check.pk for check in mine} == {checks[1].pk, checks[0].pk}
    assert services.claim_due(Check.objects.all(), now=now, token="theirs").count() == 1
    assert services.renew_claims("mine", now + timedelta(seconds=100)) == 2
    assert {c.claimed_until for c in Check.objects.filter(claim_token="mine")} == {
        now + timedelta(seconds=400)
    }
    assert services.release_claims("mine", [checks[1].pk]) == 1
    assert services.release_claims("mine") == 1
    assert Check.objects.filter(claim_token="theirs").count() == 1
    assert Check.objects.filter(claim_token="", claimed_until__isnull=True).count() == 2


@pytest.mark.django_db
def test_check_sites_due_runs_due_checks_and_lists_without_claiming(web, capsys):
    fleet(web, 2)
    call_command("check_sites", "--due", "--list")
    assert capsys.readouterr().out.count("front-page") == 2
    assert not Check.objects.exclude(claim_token="").exists()
    call_command("check_sites", "--due", "--workers", "0")
    assert TestResult.objects.count() == 2
    call_command("check_sites", "--due", "--workers", "0")
    assert TestResult.objects.count() == 2


# -- concurrency ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_never_overlap(web):
    """Eight claimers released by one barrier, each on its own connection."""
    fleet(web, 40)
    barrier = threading.Barrier(8)
    claimed: list[list[int]] = []

    def claimer() -> None:
        try:
            barrier.wait()
            claimed.append(
                list(services.claim_due(Check.objects.all(), limit=10).values_list("pk", flat=True))
            )
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claimer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = Counter(pk for pks in claimed for pk in pks)
    assert len(claimed) == 8
    assert max(counts.values()) == 1, "a check was claimed twice"
    assert Check.objects.exclude(claim_token="").count() == sum(counts.values())


@pytest.mark.django_db(transaction=True)
def test_three_overlapping_check_sites_due_runs_run_each_check_exactly_once(web):
    runs: list[subprocess.Popen[str]] = []

    def hold_until_the_others_have_looked(request: object) -> None:
        # No check finishes before two of the three runs have looked for due
        # checks and exited, so they looked while every check was claimed and
        # none recorded. Were claims not exclusive, all three would be stuck
        # here running checks, and each check would be run three times.
        deadline = time.monotonic() + 30
        while sum(run.poll() is not None for run in runs) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)

    web.route("/", body="<html><body>Latest News</body></html>", on_request=hold_until_the_others_have_looked)
    fleet(web, 12)
    runs.extend(start_check_sites("--due", "--workers", "4", "--format", "json") for _ in range(3))
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], [err for _, err in outputs]
    reported = Counter(item["site"] for out, _ in outputs for item in json.loads(out)["results"])
    assert sorted(reported.values()) == [1] * 12
    assert TestResult.objects.count() == 12
    assert web.hits["/"] == 12
    assert Counter(TestResult.objects.values_list("site__slug", flat=True)) == reported
    assert not Check.objects.exclude(claim_token="").exists()
    assert not Check.objects.filter(next_due_at__lte=timezone.now()).exists()


needs_postgres = pytest.mark.skipif(
    not ON_POSTGRES, reason="needs KONG_TEST_DATABASE=postgres (.ci/test-all)"
)


@pytest.mark.postgres
@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_three_overlapping_runs_on_postgresql(web):
    assert connection.vendor == "postgresql"
    test_three_overlapping_check_sites_due_runs_run_each_check_exactly_once(web)


@pytest.mark.postgres
@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_never_overlap_on_postgresql(web):
    assert connection.vendor == "postgresql"
    test_concurrent_claims_never_overlap(web)


@pytest.mark.django_db
@override_settings(KONG_CLAIM_LEASE=1)
def test_a_long_due_run_renews_its_leases_and_leaves_no_claim(web):
    web.route("/", delay=0.5)
    sites = [make_site(f"site-{n}", servername=web.host) for n in range(3)]
    make_test(body="go {{ site.url }}\ncode 200", sites=sites)
    checks = services.claim_due(services.select_checks(), token="run")
    first_lease = Check.objects.filter(claim_token__gt="").values_list("claimed_until", flat=True)[0]
    seen: list[object] = []

    def after_each(report: services.CheckReport, done: int, total: int) -> None:
        seen.extend(Check.objects.filter(claim_token__gt="").values_list("claimed_until", flat=True))

    services.run_checks(checks, workers=0, token="run", on_result=after_each)

    assert seen
    assert max(seen) > first_lease  # the leases still held were pushed forward
    assert not Check.objects.filter(claim_token__gt="").exists()
    assert TestResult.objects.count() == 3
