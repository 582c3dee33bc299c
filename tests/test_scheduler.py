"""kong_scheduler: the Scheduler's steps, and a real process stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core import mail
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from kong import services
from kong.models import Check, Delivery, Site, Status, TestResult
from kong.notifiers import outbox
from kong.scheduler import Scheduler
from tests.factories import make_site, make_test, make_type

ROOT = Path(__file__).resolve().parent.parent
ON_POSTGRES = os.environ.get("KONG_TEST_DATABASE") == "postgres"


def fleet(web, sites: int, *, delay: float = 0.0) -> None:
    web.route("/", body="<html><body>Latest News</body></html>", delay=delay)
    news = make_type("news")
    for number in range(sites):
        make_site(f"site{number}", web.host, type=news)
    make_test("front-page", body='go {{ site.url }}\ncode 200\nfind "Latest News"', types=[news])
    services.sync_checks()


def drain(scheduler: Scheduler) -> list[services.CheckReport]:
    reports = []
    while scheduler.in_flight:
        reports += scheduler.collect(1.0)
    return reports


def assert_nothing_half_written() -> None:
    """Every result is whole, every state row points at one, and no claim is left."""
    for result in TestResult.objects.all():
        assert result.status in Status.values
        assert result.duration >= 0
        assert result.content.strip()
    for check in Check.objects.all():
        assert (check.claim_token, check.claimed_until) == ("", None), check
        if check.last_result_id:
            assert check.next_due_at is not None
            assert check.next_due_at > check.last_run_at
        else:
            assert check.next_due_at is None  # still due: the next run takes it at once


# -- the steps -------------------------------------------------------------------


@pytest.mark.django_db
def test_a_tick_claims_only_as_many_checks_as_there_are_idle_workers(web):
    fleet(web, 5)
    scheduler = Scheduler(2, prune=False)
    try:
        scheduler.tick()
        assert len(scheduler.in_flight) == 2
        assert Check.objects.filter(claim_token__in=scheduler.tokens).count() == 2
        assert scheduler.tick() == []
        assert len(scheduler.in_flight) == 2
        reports = drain(scheduler)
        for _ in range(2):
            scheduler.tick()
            reports += drain(scheduler)
    finally:
        scheduler.shutdown(0)
    assert sorted(report.site for report in reports) == [f"site{n}" for n in range(5)]
    assert all(report.status == "passed" for report in reports)
    assert TestResult.objects.count() == 5
    assert_nothing_half_written()


@pytest.mark.django_db
def test_a_tick_renews_the_lease_of_checks_in_flight(web):
    fleet(web, 1, delay=1.0)
    scheduler = Scheduler(1, prune=False)
    try:
        scheduler.tick()
        later = timezone.now() + timedelta(seconds=250)
        scheduler.tick(now=later)
        assert Check.objects.get().claimed_until == later + timedelta(seconds=300)
        drain(scheduler)
    finally:
        scheduler.shutdown(0)


@pytest.mark.django_db
def test_an_invalid_script_is_recorded_at_once_as_an_error(web):
    make_test("broken", body="go {{ site.url }}\nrun 'import os'", sites=[make_site(servername=web.host)])
    services.sync_checks()
    scheduler = Scheduler(1, prune=False)
    try:
        (report,) = scheduler.tick()
    finally:
        scheduler.shutdown(0)
    assert report.status == "error"
    assert "run" in report.reason
    assert scheduler.in_flight == {}
    assert_nothing_half_written()


@pytest.mark.django_db
def test_shutdown_with_no_grace_cancels_checks_in_flight_and_releases_their_claims(web):
    fleet(web, 2, delay=5.0)
    scheduler = Scheduler(2, prune=False)
    scheduler.tick()
    while web.hits.get("/", 0) < 2:
        time.sleep(0.05)
    assert scheduler.shutdown(0) == []
    assert TestResult.objects.count() == 0
    assert_nothing_half_written()
    assert services.claim_due(Check.objects.all()).count() == 2  # due again at once


@pytest.mark.django_db
def test_shutdown_lets_checks_in_flight_finish_within_the_grace(web):
    fleet(web, 2, delay=0.5)
    scheduler = Scheduler(2, prune=False)
    scheduler.tick()
    reports = scheduler.shutdown(30)
    assert sorted(report.status for report in reports) == ["passed", "passed"]
    assert TestResult.objects.count() == 2
    assert_nothing_half_written()


@pytest.mark.django_db
def test_pruning_runs_once_a_day():
    scheduler = Scheduler(1)
    try:
        now = timezone.now()
        assert scheduler.prune_daily(now) is not None
        assert scheduler.prune_daily(now + timedelta(minutes=5)) is None
        assert scheduler.prune_daily(now + timedelta(days=1)) is not None
    finally:
        scheduler.shutdown(0)


# -- the real process ------------------------------------------------------------


def start_scheduler(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if ON_POSTGRES:
        env["PGDATABASE"] = str(connection.settings_dict["NAME"])
    else:
        env["KONG_SQLITE_PATH"] = str(connection.settings_dict["NAME"])
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "django",
            "kong_scheduler",
            "--settings=tests.settings",
            "--tick",
            "0.2",
            *args,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def sigterm_when_busy(process: subprocess.Popen[str], web, busy: int) -> tuple[str, str]:
    deadline = time.monotonic() + 60
    while web.hits.get("/", 0) < busy and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGTERM)
    return process.communicate(timeout=60)


@pytest.mark.django_db(transaction=True)
def test_sigterm_lets_checks_in_flight_finish_and_records_them_whole(web):
    fleet(web, 6, delay=3.0)  # long enough that no third check starts before the signal
    process = start_scheduler("--workers", "2", "--grace", "30")
    out, err = sigterm_when_busy(process, web, busy=2)
    assert process.returncode == 0, err
    assert "stopping: 2 checks in flight" in out
    assert "stopped: 2 checks recorded" in out
    assert TestResult.objects.count() == 2 == web.hits["/"]
    assert_nothing_half_written()


@pytest.mark.django_db(transaction=True)
def test_sigterm_with_no_grace_cancels_checks_and_records_nothing_for_them(web):
    fleet(web, 6, delay=30)
    process = start_scheduler("--workers", "3", "--grace", "0")
    out, err = sigterm_when_busy(process, web, busy=3)
    assert process.returncode == 0, err
    assert "stopped: 0 checks recorded" in out
    assert TestResult.objects.count() == 0
    assert_nothing_half_written()


@pytest.mark.django_db(transaction=True)
def test_a_second_sigterm_cancels_at_once(web):
    fleet(web, 2, delay=30)
    process = start_scheduler("--workers", "2", "--grace", "300")
    deadline = time.monotonic() + 60
    while web.hits.get("/", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=60)  # far less than the 300 s grace
    assert process.returncode == 0, err
    assert TestResult.objects.count() == 0
    assert_nothing_half_written()


@pytest.mark.postgres
@pytest.mark.skipif(not ON_POSTGRES, reason="needs KONG_TEST_DATABASE=postgres (.ci/test-all)")
@pytest.mark.django_db(transaction=True)
def test_sigterm_on_postgresql(web):
    assert connection.vendor == "postgresql"
    test_sigterm_lets_checks_in_flight_finish_and_records_them_whole(web)


@pytest.mark.django_db
def test_a_tick_picks_up_tests_added_since_the_last_one(web):
    fleet(web, 1)
    scheduler = Scheduler(2, prune=False)
    try:
        scheduler.tick()
        drain(scheduler)
        make_test("search", body="go {{ site.url }}\ncode 200", sites=[Site.objects.get(slug="site0")])
        scheduler.tick()
        reports = drain(scheduler)
    finally:
        scheduler.shutdown(0)
    assert [(report.test, report.site) for report in reports] == [("search", "site0")]


# -- regressions: checks slower than the tick, and database outages ---------------


@pytest.mark.django_db
def test_a_tick_never_starts_a_check_that_is_still_in_flight(web):
    """Regression: claim_due returned every row holding the scheduler's one
    token, so each tick with an idle worker submitted the checks in flight
    again, and the second copy's outcome crashed the loop with KeyError."""
    fleet(web, 1, delay=1.5)  # slower than the ticks below
    scheduler = Scheduler(3, prune=False)
    try:
        scheduler.tick()
        scheduler.tick()  # two idle workers: nothing new is due
        scheduler.tick()
        assert len(scheduler.in_flight) == 1
        assert scheduler.pool.in_flight == 1
        reports = drain(scheduler)
        for _ in range(5):  # a second copy, had one started, would land now
            reports += scheduler.collect(0.3)
    finally:
        scheduler.shutdown(0)
    assert len(reports) == 1
    assert web.hits["/"] == 1
    assert TestResult.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_outcomes_are_held_while_the_database_is_locked_and_recorded_once_it_is_back(web, tmp_path):
    """Regression: a database error while recording dropped the finished checks."""
    if ON_POSTGRES:
        pytest.skip("the SQLite variant; PostgreSQL has its own below")
    import sqlite3

    fleet(web, 2)
    scheduler = Scheduler(2, prune=False)
    blocker = sqlite3.connect(str(connection.settings_dict["NAME"]), isolation_level=None)
    try:
        scheduler.tick()
        connection.ensure_connection()
        connection.connection.execute("PRAGMA busy_timeout = 200")
        blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the database
        held: list[services.CheckReport] = []
        deadline = time.monotonic() + 60
        while scheduler.in_flight and time.monotonic() < deadline:
            held += scheduler.collect_only(0.5)
        assert held == []
        assert len(scheduler.unrecorded) == 2
        blocker.execute("ROLLBACK")  # the database is back
        reports = scheduler.collect(0)
    finally:
        blocker.close()
        scheduler.shutdown(0)
    assert len(reports) == 2
    assert TestResult.objects.count() == 2
    assert_nothing_half_written()


@pytest.mark.django_db
def test_a_result_is_recorded_at_most_once_even_when_recording_is_retried(web):
    fleet(web, 1)
    scheduler = Scheduler(1, prune=False)
    try:
        scheduler.tick()
        (check, source, token), = scheduler.in_flight.values()
        drain(scheduler)
    finally:
        scheduler.shutdown(0)
    outcome = services.invalid_outcome(services.ScriptError("late copy"))
    assert services.record(check, outcome, source=source, token=token) is None  # the claim is gone
    assert TestResult.objects.count() == 1


# -- alerts: sent beside the loop, never in its way --------------------------------


def failing_fleet(web, sites: int) -> None:
    fleet(web, sites)
    web.route("/", status=500, body="<html><body>down</body></html>")


@pytest.mark.django_db(transaction=True)
def test_a_hanging_webhook_never_holds_up_the_loop(web, hook):
    """Regression: alerts went out inline while recording, so one webhook
    that did not answer stalled every tick for its timeout."""
    failing_fleet(web, 1)
    hook.route("/slow", body="ok", delay=30)
    with override_settings(KONG_WEBHOOKS=[hook.url("/slow")], KONG_DELIVERY_TIMEOUT=3):
        scheduler = Scheduler(1, prune=False)
        try:
            scheduler.tick()
            drain(scheduler)  # records the failure and hands its delivery to a sender thread
            assert scheduler.sender.busy
            started = time.monotonic()
            for _ in range(5):
                scheduler.tick()
                scheduler.collect(0.05)
            steps = time.monotonic() - started
            assert scheduler.sender.busy  # still sending: the loop did not wait for it
        finally:
            scheduler.shutdown(0)
    assert steps < 3  # five ticks and collects took less than the one delivery timeout they ran beside
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert "timed out" in delivery.error  # shutdown waited for the attempt to time out, and recorded it


@pytest.mark.django_db
@override_settings(KONG_MAIL_MANAGERS=True)
def test_a_storm_spread_over_ticks_folds_into_one_summary(web):
    failing_fleet(web, 6)
    scheduler = Scheduler(2, prune=False)
    try:
        for _ in range(3):  # two checks per tick
            scheduler.tick()
            drain(scheduler)
    finally:
        scheduler.shutdown(0)
    assert Delivery.objects.count() == 6
    assert outbox.send_pending().sent == 0  # held while the storm gathers
    outbox.send_pending(now=timezone.now() + timedelta(seconds=outbox.STORM_WINDOW + 1))
    assert [message.subject for message in mail.outbox] == ["[kong] FAILED: Front Page on 6 of 6 News sites"]


@pytest.mark.django_db
@override_settings(KONG_MAIL_MANAGERS=True)
def test_a_tick_alerts_a_failure_whose_mute_has_ended(web):
    failing_fleet(web, 1)
    Check.objects.update(muted_until=timezone.now() + timedelta(hours=1))
    scheduler = Scheduler(1, prune=False)
    try:
        scheduler.tick()
        drain(scheduler)
        assert not Delivery.objects.exists()
        Check.objects.update(muted_until=timezone.now() - timedelta(seconds=1))
        outbox.alert_ended_mutes()  # what each tick does (outside a test's transaction)
    finally:
        scheduler.shutdown(0)
    outbox.send_pending()
    assert [message.subject for message in mail.outbox] == ["[kong] FAILED: Site0 / Front Page"]
