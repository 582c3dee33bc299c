"""kong.notifiers.outbox: alerts as Delivery rows, sent after the commit,
bounded, retried, grouped in storms, and honest about mutes.

Real parts only: sites and webhooks are FakeSites on 127.0.0.1, a dead SMTP
server is a real socket on 127.0.0.1 (one that refuses, one that accepts
and never answers) behind Django's own SMTP backend, and mail otherwise
goes to Django's locmem backend.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import django
import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.db import connection, connections
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from kong import services
from kong.models import Check, Delivery, TestResult
from kong.notifiers import Event, Notifier, NotifierError, Summary, outbox
from kong.notifiers.email import mail_connection
from tests.factories import make_site, make_test, make_type
from tests.fleet import FakeSite, RawServer, closed_port

ROOT = Path(__file__).resolve().parent.parent
ON_POSTGRES = os.environ.get("KONG_TEST_DATABASE") == "postgres"
MAIL_MANAGERS = override_settings(KONG_MAIL_MANAGERS=True)
EMAIL = "kong.notifiers.email.EmailNotifier"
WEBHOOK = "kong.notifiers.webhook.WebhookNotifier"


def smtp_at(port: int) -> override_settings:
    """Django's real SMTP backend pointed at 127.0.0.1:``port`` (MAILERS on Django 6.1+)."""
    backend = "django.core.mail.backends.smtp.EmailBackend"
    if django.VERSION >= (6, 1):
        return override_settings(MAILERS={"default": {"BACKEND": backend, "OPTIONS": {"host": "127.0.0.1", "port": port}}})
    return override_settings(EMAIL_BACKEND=backend, EMAIL_HOST="127.0.0.1", EMAIL_PORT=port)


def news_fleet(web: FakeSite, sites: int, *, failing: int | None = None, typed: bool = True) -> None:
    """``sites`` sites (of type News when ``typed``), each at its own path on
    ``web``; the first ``failing`` of them (default all) answer 500."""
    news = make_type("news", name="News") if typed else None
    made = []
    for number in range(sites):
        made.append(make_site(f"site{number:03}", f"{web.host}/s{number}", name=f"Site {number:03}", type=news))
        web.route(f"/s{number}", status=500 if number < (sites if failing is None else failing) else 200)
    make_test("front-page", name="Front page", body="go {{ site.url }}\ncode 200", types=[news] if news else [], sites=[] if news else made)
    services.sync_checks()


def fix_all(web: FakeSite) -> None:
    for path in list(web.routes):
        if path.startswith("/s"):
            web.route(path)


def run(workers: int = 0) -> services.RunReport:
    return services.run_checks(services.select_checks(), workers=workers)


def subjects() -> list[str]:
    return [message.subject for message in mail.outbox]


# -- the outbox: rows with the results, sent after the commit -----------------------


@pytest.mark.django_db
@MAIL_MANAGERS
def test_a_failure_is_recorded_as_one_pending_delivery_per_notifier_and_sent_after(web, hook):
    news_fleet(web, 1, typed=False)
    hook.route("/other", body="ok")
    with override_settings(KONG_WEBHOOKS=[hook.url("/hook"), hook.url("/other")]):
        run()
        rows = list(Delivery.objects.order_by("notifier", "target"))
        assert [(row.notifier, row.target, row.kind, row.status) for row in rows] == [
            (EMAIL, "", "failure", "pending"),
            (WEBHOOK, hook.url("/hook"), "failure", "pending"),
            (WEBHOOK, hook.url("/other"), "failure", "pending"),
        ]
        assert all(row.result == TestResult.objects.get() for row in rows)
        assert mail.outbox == []  # nothing was sent while recording
        sender = outbox.send_pending()
    assert sender.sent == 3
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
    assert all(row.sent_at and row.attempts == 1 for row in Delivery.objects.all())
    assert len(mail.outbox) == 1
    assert len(hook.requests_to("/hook")) == 1 == len(hook.requests_to("/other"))
    outbox.send_pending()
    assert len(mail.outbox) == 1  # sent once


# -- bounded: a dead SMTP server, a hanging webhook --------------------------------


@pytest.mark.django_db
@MAIL_MANAGERS
@override_settings(KONG_DELIVERY_TIMEOUT=1)
def test_an_smtp_server_that_never_answers_costs_one_timeout_and_stays_pending_with_its_error(web):
    """Regression: EMAIL_TIMEOUT defaults to None, so a silent SMTP server held the run for ever."""
    news_fleet(web, 1, typed=False)
    run()
    silent = RawServer("silent").start()  # accepts (the kernel does) and never says a word
    try:
        with smtp_at(silent.port):
            assert mail_connection().timeout == 1
            started = time.monotonic()
            outbox.send_pending()
            took = time.monotonic() - started
    finally:
        silent.stop()
    assert took < 20  # one 1 s timeout, with a wide margin for a loaded machine; never "for ever"
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert "timed out" in delivery.error
    assert delivery.next_attempt_at > timezone.now()  # backs off before the next attempt


@pytest.mark.django_db
@MAIL_MANAGERS
def test_an_smtp_server_that_refuses_is_retried_then_failed_with_its_error(web):
    news_fleet(web, 1, typed=False)
    run()
    now = timezone.now()
    with smtp_at(closed_port()), override_settings(KONG_DELIVERY_RETRIES=3):
        for attempt in range(1, 4):
            outbox.send_pending(now=now + timedelta(hours=attempt))
            delivery = Delivery.objects.get()
            assert delivery.attempts == attempt
            assert "Connection refused" in delivery.error
        assert delivery.status == "failed"
        outbox.send_pending(now=now + timedelta(days=1))
    assert Delivery.objects.get().attempts == 3  # failed is final
    assert mail.outbox == []


@pytest.mark.django_db
@override_settings(KONG_DELIVERY_TIMEOUT=1)
def test_a_hanging_webhook_costs_one_timeout_per_attempt_not_five_seconds_per_url(web, hook):
    news_fleet(web, 1, typed=False)
    hook.route("/slow", body="ok", delay=30)
    with override_settings(KONG_WEBHOOKS=[hook.url("/slow"), hook.url("/hook")]):
        run()
        started = time.monotonic()
        outbox.send_pending()
        took = time.monotonic() - started
    assert took < 20
    slow, fast = Delivery.objects.order_by("target").reverse()
    assert (slow.target, slow.status) == (hook.url("/slow"), "pending")
    assert "timed out" in slow.error
    assert (fast.target, fast.status) == (hook.url("/hook"), "sent")  # one URL down does not hold the other


def storm_run_time(web, hook, sites: int, *, alerts: bool) -> tuple[float, int]:
    """One run of ``sites`` failing checks (8 workers); with ``alerts`` the
    SMTP server accepts and never answers and the webhook hangs. Returns its
    seconds and how many deliveries it wrote."""
    Check.objects.update(consecutive_failures=0, alerted_at=None, status="passed", next_due_at=None)
    Delivery.objects.all().delete()
    silent = RawServer("silent").start()
    try:
        settings = {"KONG_MAIL_MANAGERS": alerts, "KONG_WEBHOOKS": [hook.url("/slow")] if alerts else []}
        with smtp_at(silent.port), override_settings(**settings):
            started = time.monotonic()
            report = run(workers=8)
            took = time.monotonic() - started
    finally:
        silent.stop()
    assert report.failed == sites
    return took, Delivery.objects.count()


STORM_SITES = int(os.environ.get("KONG_STORM_SITES", "60"))
STORM_TIMEOUT = float(os.environ.get("KONG_STORM_TIMEOUT", "2"))


@pytest.mark.django_db(transaction=True)
@override_settings(KONG_DELIVERY_TIMEOUT=STORM_TIMEOUT)
def test_a_fleet_wide_outage_with_smtp_down_and_a_hanging_webhook_costs_a_run_at_most_one_timeout(web, hook):
    """Regression: alerts went out inline while recording, each webhook up to
    5 s and SMTP without any timeout, so an outage stalled the run for
    (failures x notifiers x timeout). The README's figure:
    KONG_STORM_SITES=300 KONG_STORM_TIMEOUT=10 pytest -s -k fleet_wide."""
    if ON_POSTGRES:
        pytest.skip("the SQLite variant")
    sites = STORM_SITES
    news_fleet(web, sites, typed=False)  # no type: no storm summary, one alert per site and notifier
    hook.route("/slow", body="ok", delay=120)
    storm_run_time(web, hook, sites, alerts=False)  # warms up (imports, caches), not measured
    quiet, _ = storm_run_time(web, hook, sites, alerts=False)
    noisy, written = storm_run_time(web, hook, sites, alerts=True)
    statuses = dict(Delivery.objects.values_list("status").annotate(n=django.db.models.Count("*")))
    print(
        f"\n{sites} failing checks, 8 workers, delivery timeout {STORM_TIMEOUT:g} s: {quiet:.2f} s without alerts, "
        f"{noisy:.2f} s with SMTP down and a hanging webhook; {written} deliveries {statuses}"
    )
    assert noisy <= 1.5 * quiet + STORM_TIMEOUT + 5  # one delivery timeout, and a wide margin for 2 shared cores
    assert written == 2 * sites  # every alert is on record...
    assert set(statuses) <= {"pending", "sent", "failed"}  # ...as pending, sent or failed
    assert "timed out" in Delivery.objects.filter(attempts__gt=0).first().error


# -- a crash loses nothing, and sends nothing twice ---------------------------------


def settings_module(folder: Path, **settings: object) -> str:
    (folder / "kill_settings.py").write_text(
        "from tests.settings import *  # noqa\n" + "".join(f"{name} = {value!r}\n" for name, value in settings.items())
    )
    return "kill_settings"


def check_sites(settings: str, folder: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": f"{folder}{os.pathsep}{ROOT}"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["KONG_SQLITE_PATH"] = str(connection.settings_dict["NAME"])
    return subprocess.Popen(
        [sys.executable, "-m", "django", "check_sites", f"--settings={settings}", "--workers", "0", "--quiet"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.skipif(ON_POSTGRES, reason="the subprocess opens the SQLite test file")
@pytest.mark.django_db(transaction=True)
def test_a_run_killed_after_its_results_commit_delivers_on_the_next_run_exactly_once(web, hook, tmp_path):
    """Regression: alerts were on_commit callbacks in memory, so a process
    killed between the commit and the send lost them for good (and the check
    counted the failure as alerted)."""
    news_fleet(web, 1, typed=False)
    posted = threading.Event()
    hook.route("/hook", body="ok", delay=60, on_request=lambda request: posted.set())
    settings = settings_module(tmp_path, KONG_WEBHOOKS=[hook.url("/hook")], KONG_DELIVERY_TIMEOUT=1)
    process = check_sites(settings, tmp_path)
    assert posted.wait(60), process.communicate()
    process.send_signal(signal.SIGKILL)  # mid-send: the result is committed, the POST hangs
    process.wait(30)
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.result) == ("pending", 1, TestResult.objects.get())
    hook.route("/hook", body="ok")  # the webhook works again
    while Delivery.objects.get().claimed_until >= timezone.now():  # the dead sender's claim runs out
        time.sleep(0.2)
    for _ in range(2):  # the next run sends it; the one after sends nothing more
        process = check_sites(settings, tmp_path)
        _out, err = process.communicate(timeout=120)
        assert process.returncode == 2, err  # the site still fails
    delivery = Delivery.objects.get()  # the second failure in a row alerts nothing new
    assert (delivery.status, delivery.attempts) == ("sent", 2)
    assert len(hook.requests_to("/hook")) == 2  # the one cut off by the kill, and the one delivered
    assert json.loads(hook.requests_to("/hook")[1].body)["event"] == "failure"


@pytest.mark.django_db(transaction=True)
def test_two_senders_at_once_never_send_one_delivery_twice(web):
    news_fleet(web, 1, typed=False)
    check, result = Check.objects.get(), None
    run()
    result = TestResult.objects.get()
    Delivery.objects.all().delete()
    Delivery.objects.bulk_create(
        Delivery(site_check=check, result=result, kind="failure", notifier=f"{__name__}.CountingNotifier", target=str(n))
        for n in range(60)
    )
    COUNTED.clear()
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            outbox.send_pending(threads=4)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sender) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert sorted(COUNTED) == [str(n) for n in sorted(range(60), key=str)]  # each once
    assert set(Delivery.objects.values_list("status", "attempts")) == {("sent", 1)}


def test_a_claim_returns_only_what_it_claimed(db):
    check = make_check_with_result()
    for _ in range(5):
        Delivery.objects.create(site_check=check, result=check.last_result, kind="failure", notifier=EMAIL)
    first = outbox.claim("one", limit=3)
    second = outbox.claim("two", limit=10)
    assert len(first) == 3
    assert len(second) == 2
    assert not {row.pk for row in first} & {row.pk for row in second}
    assert outbox.claim("three", limit=10) == []


# -- retryable and permanent errors -----------------------------------------------

COUNTED: list[str] = []
FLAKY: list[int] = []


class CountingNotifier(Notifier):
    def send(self, event: Event) -> None:
        time.sleep(0.01)
        COUNTED.append(self.target)


class FlakyNotifier(Notifier):
    """Fails twice with a retryable error, then delivers."""

    def send(self, event: Event) -> None:
        FLAKY.append(1)
        if len(FLAKY) <= 2:
            raise NotifierError("pager busy", retry=True)


class PermanentNotifier(Notifier):
    def send(self, event: Event) -> None:
        raise NotifierError("no such channel", retry=False)


class BuggyNotifier(Notifier):
    def send(self, event: Event) -> None:
        raise KeyError("oops")


def make_check_with_result() -> Check:
    site = make_site("one", "127.0.0.1:1")
    make_test("t", sites=[site])
    services.sync_checks()
    check = Check.objects.get()
    check.last_result = TestResult.objects.create(test=check.test, site=site, status="failed")
    check.save()
    return check


@pytest.mark.django_db
@override_settings(KONG_NOTIFIERS=[f"{__name__}.FlakyNotifier"], KONG_DELIVERY_RETRIES=3)
def test_a_retryable_error_is_tried_again_after_a_backoff_and_then_delivered():
    check = make_check_with_result()
    FLAKY.clear()
    outbox.queue_alerts([outbox.Alerted(check, check.last_result, "failure")])
    now = timezone.now()
    outbox.send_pending(now=now)
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.error) == ("pending", 1, "pager busy")
    outbox.send_pending(now=now)  # still backing off: not tried
    assert Delivery.objects.get().attempts == 1
    outbox.send_pending(now=delivery.next_attempt_at)
    outbox.send_pending(now=delivery.next_attempt_at + timedelta(minutes=5))
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.error) == ("sent", 3, "")
    assert len(FLAKY) == 3


@pytest.mark.django_db
@override_settings(KONG_NOTIFIERS=[f"{__name__}.PermanentNotifier", f"{__name__}.BuggyNotifier", "kong.nope.Missing"])
def test_a_permanent_error_fails_at_once_and_nothing_raises():
    check = make_check_with_result()
    outbox.queue_alerts([outbox.Alerted(check, check.last_result, "failure")])
    outbox.send_pending()
    rows = {row.notifier.rpartition(".")[2]: row for row in Delivery.objects.all()}
    assert (rows["PermanentNotifier"].status, rows["PermanentNotifier"].error) == ("failed", "no such channel")
    assert rows["BuggyNotifier"].status == "failed"
    assert "KeyError" in rows["BuggyNotifier"].error
    assert rows["Missing"].status == "failed"
    assert "cannot send" in rows["Missing"].error
    assert all(row.attempts == 1 for row in rows.values())


@pytest.mark.django_db
def test_a_webhook_4xx_is_permanent_and_a_5xx_is_retried(web, hook):
    news_fleet(web, 1, typed=False)
    hook.route("/gone", status=404, body="no")
    hook.route("/busy", status=503, body="later")
    with override_settings(KONG_WEBHOOKS=[hook.url("/gone"), hook.url("/busy")]):
        run()
        outbox.send_pending()
    gone, busy = (Delivery.objects.get(target=hook.url(path)) for path in ("/gone", "/busy"))
    assert (gone.status, busy.status) == ("failed", "pending")
    assert gone.error == f"{hook.host}: HTTP 404 Not Found"  # the host only: a hook's path is its secret
    assert "HTTP 503" in busy.error


# -- storms -------------------------------------------------------------------------


@pytest.mark.django_db
@MAIL_MANAGERS
def test_forty_sites_failing_one_test_send_one_summary_per_notifier_and_so_does_their_recovery(web, hook):
    news_fleet(web, 40, failing=37)
    with override_settings(KONG_WEBHOOKS=[hook.url("/hook")]):
        run()  # records in batches of 20: the storm spans them
        outbox.send_pending()
        assert subjects() == ["[kong] FAILED: Front page on 37 of 40 News sites"]
        body = mail.outbox[0].body
        assert "front-page failing on 37 of 40 News sites" in body
        assert body.count("- Site ") == 37
        assert "Site 036" in body
        assert "Site 037" not in body
        (post,) = hook.requests_to("/hook")
        data = json.loads(post.body)
        assert (data["event"], data["alert"], data["test"], data["type"], data["sites"], data["of"]) == (
            "summary", "failure", "front-page", "news", 37, 40,
        )  # fmt: skip
        assert data["text"].startswith("Kong: front-page failing on 37 of 40 News sites\n- Site 000: failed")
        assert len(data["results"]) == 37
        summaries = Delivery.objects.filter(kind="summary")
        assert summaries.count() == 2
        assert set(summaries.values_list("status", flat=True)) == {"sent"}
        members = Delivery.objects.exclude(kind="summary")
        assert members.count() == 74
        assert set(members.values_list("status", flat=True)) == {"sent"}
        fix_all(web)
        mail.outbox.clear()
        run()
        outbox.send_pending()
    assert subjects() == ["[kong] RECOVERED: Front page on 37 of 40 News sites"]
    assert json.loads(hook.requests_to("/hook")[1].body)["alert"] == "recovery"


@pytest.mark.django_db
@MAIL_MANAGERS
def test_fewer_failures_than_the_threshold_are_sent_one_by_one(web):
    news_fleet(web, 40, failing=4)
    run()
    outbox.send_pending()
    assert len(mail.outbox) == 4
    assert all(subject.startswith("[kong] FAILED: Site 00") for subject in subjects())


@pytest.mark.django_db
@MAIL_MANAGERS
def test_a_storm_held_by_a_run_that_died_is_released_after_the_lease_and_still_folds(web):
    news_fleet(web, 6)
    checks = list(services.select_checks())
    storms = services.running.Storms(checks)
    outcomes = [(check, services.invalid_outcome(services.ScriptError("boom")), "") for check in checks]
    services.record_many(outcomes, group=storms.group, hold=storms.hold)  # ...and the run dies here
    outbox.send_pending()
    assert mail.outbox == []  # held for the rest of the storm
    outbox.send_pending(now=timezone.now() + timedelta(seconds=301))  # KONG_CLAIM_LEASE later
    assert subjects() == ["[kong] FAILED: Front page on 6 of 6 News sites"]


def test_the_summary_reads_well_in_chat():
    class Named:
        def __init__(self, **fields):
            self.__dict__.update(fields)

    site_type = Named(name="News", slug="news")
    test = Named(name="Front page", slug="front-page")
    events = tuple(
        Event("failure", None, Named(site_id=n, server_id=None, site=Named(name=f"S{n}"), status="error", reason="refused", absolute_url=lambda: ""))  # type: ignore[arg-type]
        for n in range(3)
    )
    summary = Summary(alert="failure", test=test, site_type=site_type, events=events, total=40)  # type: ignore[arg-type]
    assert summary.subject == "FAILED: Front page on 3 of 40 News sites"
    assert summary.text == "Kong: front-page failing on 3 of 40 News sites\n- S0: error, refused\n- S1: error, refused\n- S2: error, refused"


# -- honest mutes -------------------------------------------------------------------


@pytest.mark.django_db
@MAIL_MANAGERS
def test_a_failure_that_began_under_a_mute_is_alerted_when_the_mute_ends_and_only_then_recovers(web):
    """Regression: a failure that began under a mute was never alerted, and
    its recovery mailed RECOVERED for a failure nobody had heard about."""
    news_fleet(web, 1, typed=False)
    Check.objects.update(muted_until=timezone.now() + timedelta(hours=1))
    run()
    run()
    outbox.send_pending()
    assert mail.outbox == []  # muted
    Check.objects.update(muted_until=timezone.now() - timedelta(seconds=1))  # the mute ends
    run()  # the next run alerts it (consecutive failure 3: no alert of its own)
    outbox.send_pending()
    assert subjects() == ["[kong] FAILED: Site 000 / Front page"]
    fix_all(web)
    run()
    outbox.send_pending()
    assert subjects() == ["[kong] FAILED: Site 000 / Front page", "[kong] RECOVERED: Site 000 / Front page"]


@pytest.mark.django_db
@MAIL_MANAGERS
def test_a_failure_that_recovers_under_its_mute_sends_nothing_at_all(web):
    news_fleet(web, 1, typed=False)
    Check.objects.update(muted_until=timezone.now() + timedelta(hours=1))
    run()
    fix_all(web)
    run()
    Check.objects.update(muted_until=timezone.now() - timedelta(seconds=1))
    run()
    outbox.send_pending()
    assert mail.outbox == []
    assert not Delivery.objects.exists()


@pytest.mark.django_db
@MAIL_MANAGERS
def test_an_ended_mute_alerts_once(web):
    news_fleet(web, 1, typed=False)
    Check.objects.update(muted_until=timezone.now() + timedelta(hours=1))
    run()
    Check.objects.update(muted_until=timezone.now() - timedelta(seconds=1))
    assert outbox.alert_ended_mutes() == 1
    assert outbox.alert_ended_mutes() == 0
    run()
    outbox.send_pending()
    assert len(mail.outbox) == 1


# -- where people see it ------------------------------------------------------------


@pytest.mark.django_db
def test_the_result_page_and_the_admin_show_each_delivery_and_its_error(web, client):
    news_fleet(web, 1, typed=False)
    with override_settings(KONG_WEBHOOKS=[f"http://127.0.0.1:{closed_port()}/secret-hook-path"]):
        run()
        outbox.send_pending()
    client.force_login(User.objects.create_superuser("root", password="pw"))
    page = client.get(reverse("kong:result_detail", args=[TestResult.objects.get().pk])).content.decode()
    assert "Alerts" in page
    assert "WebhookNotifier (127.0.0.1)" in page
    assert "pending" in page
    assert "Connection refused" in page
    assert "secret-hook-path" not in page
    changelist = client.get(reverse("admin:kong_delivery_changelist") + "?status=retrying").content.decode()
    assert "WebhookNotifier (127.0.0.1)" in changelist
    assert "Connection refused" in changelist
    detail = client.get(reverse("admin:kong_testresult_change", args=[TestResult.objects.get().pk])).content.decode()
    assert "Connection refused" in detail
