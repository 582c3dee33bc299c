"""Alerts: django-kong's mail rules, and webhooks, end to end through real runs."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from django.core import mail
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from kong import services
from kong.masking import MASK
from kong.models import Check, Delivery, TestResult
from kong.notifiers import Event, Notifier, NotifierError, notify, outbox
from tests.factories import make_site, make_test
from tests.fleet import closed_port

pytestmark = pytest.mark.django_db

MAIL_MANAGERS = override_settings(KONG_MAIL_MANAGERS=True)


@pytest.fixture
def site(web):
    site = make_site("ljworld", web.host, name="Lawrence Journal-World", variables={"password": "hunter2"})
    make_test(
        "front-page",
        name="Front page",
        body='go {{ site.url }}/?token={{ password }}\ncode 200\nfind "Latest News"',
        sites=[site],
    )
    return site


@pytest.fixture
def check_now():
    """Run every check inline, then send the alerts it queued, as the run's
    background sender does once the results are committed."""

    def check_now() -> services.RunReport:
        report = services.run_checks(services.select_checks(), workers=0)
        outbox.send_pending()
        return report

    return check_now


def break_site(web) -> None:
    web.route("/", status=500, body="<html><body>Server Error</body></html>")


def fix_site(web) -> None:
    web.route("/")


def subjects() -> list[str]:
    return [message.subject for message in mail.outbox]


# -- who gets mail -----------------------------------------------------------------


def test_no_mail_by_default(web, site, check_now):
    break_site(web)
    check_now()
    assert mail.outbox == []


@MAIL_MANAGERS
def test_managers_get_the_failure(web, site, check_now):
    break_site(web)
    check_now()
    (message,) = mail.outbox
    assert message.to == ["ops@example.com"]
    assert message.subject == "[kong] FAILED: Lawrence Journal-World / Front page"
    assert message.from_email == "kong@example.com"


@override_settings(KONG_MAIL_ADMINS=True)
def test_admins_get_the_failure(web, site, check_now):
    break_site(web)
    check_now()
    assert [message.to for message in mail.outbox] == [["admin@example.com"]]


@override_settings(KONG_MAIL_ADMINS=True, KONG_MAIL_MANAGERS=True, ADMINS=[("Ops", "ops@example.com")])
def test_managers_and_admins_together_get_one_mail_without_duplicates(web, site, check_now):
    break_site(web)
    check_now()
    assert [message.to for message in mail.outbox] == [["ops@example.com"]]


@override_settings(KONG_MAIL_MANAGERS=True, MANAGERS=["plain@example.com"])
def test_plain_address_lists_work_too(web, site, check_now):
    break_site(web)
    check_now()
    assert [message.to for message in mail.outbox] == [["plain@example.com"]]


# -- when --------------------------------------------------------------------------


@MAIL_MANAGERS
def test_first_failure_mails_once_and_the_second_does_not(web, site, check_now):
    break_site(web)
    check_now()
    check_now()
    check_now()
    assert subjects() == ["[kong] FAILED: Lawrence Journal-World / Front page"]
    assert Check.objects.get().consecutive_failures == 3


@override_settings(KONG_MAIL_MANAGERS=True, KONG_MAIL_ON_EVERY_FAILURE=True)
def test_mail_on_every_failure(web, site, check_now):
    break_site(web)
    for _ in range(3):
        check_now()
    assert len(mail.outbox) == 3
    assert "Failures in a row: 3" in mail.outbox[2].body


@override_settings(KONG_MAIL_MANAGERS=True, KONG_MAIL_ON_CONSECUTIVE_FAILURES=3)
def test_mail_only_after_n_consecutive_failures(web, site, check_now):
    break_site(web)
    sent = []
    for _ in range(5):
        check_now()
        sent.append(len(mail.outbox))
    assert sent == [0, 0, 1, 1, 1]


@override_settings(KONG_MAIL_MANAGERS=True, KONG_MAIL_ON_CONSECUTIVE_FAILURES=3)
def test_a_blip_below_the_threshold_neither_alerts_nor_recovers(web, site, check_now):
    break_site(web)
    check_now()
    check_now()
    fix_site(web)
    check_now()
    break_site(web)
    check_now()  # the count started again
    assert mail.outbox == []


@MAIL_MANAGERS
def test_recovery_mail_after_an_alerted_failure(web, site, check_now):
    break_site(web)
    check_now()
    check_now()
    fix_site(web)
    check_now()
    check_now()
    assert subjects() == [
        "[kong] FAILED: Lawrence Journal-World / Front page",
        "[kong] RECOVERED: Lawrence Journal-World / Front page",
    ]
    recovery = mail.outbox[1]
    assert "Kong check RECOVERED" in recovery.body
    result = TestResult.objects.filter(succeeded=True).order_by("run_date").first()
    assert f"http://kong.example.com/kong/result/{result.pk}/" in recovery.body


@override_settings(KONG_MAIL_MANAGERS=True, KONG_MAIL_ON_RECOVERY=False)
def test_no_recovery_mail_when_turned_off(web, site, check_now):
    break_site(web)
    check_now()
    fix_site(web)
    check_now()
    assert subjects() == ["[kong] FAILED: Lawrence Journal-World / Front page"]


@MAIL_MANAGERS
def test_a_pass_after_a_pass_sends_nothing(web, site, check_now):
    check_now()
    check_now()
    assert mail.outbox == []


@MAIL_MANAGERS
def test_a_new_failure_after_recovery_mails_again(web, site, check_now):
    break_site(web)
    check_now()
    fix_site(web)
    check_now()
    break_site(web)
    check_now()
    assert [subject.split(":")[0] for subject in subjects()] == ["[kong] FAILED", "[kong] RECOVERED", "[kong] FAILED"]


# -- what the mail says -------------------------------------------------------------


@MAIL_MANAGERS
def test_the_mail_names_site_test_reason_failing_line_and_links_to_the_result(web, site, check_now):
    break_site(web)
    check_now()
    body = mail.outbox[0].body
    result = TestResult.objects.get()
    assert "Site:    Lawrence Journal-World" in body
    assert "Test:    Front page" in body
    assert "Reason:  code 500 != 200 at line 2" in body
    assert "Line 2: code 200" in body
    assert f"Result:  http://kong.example.com/kong/result/{result.pk}/" in body
    assert "Status:  failed" in body


@MAIL_MANAGERS
def test_secrets_never_appear_in_the_mail(web, site, check_now):
    web.route("/", status=200, body="<html><body>nothing</body></html>")
    check_now()  # fails on line 3, after sending the token
    assert web.requests_to("/")[0].query == {"token": ["hunter2"]}
    message = mail.outbox[0]
    assert "hunter2" not in message.subject + message.body
    assert MASK in message.body  # the masked URL in the log


@MAIL_MANAGERS
def test_muted_checks_do_not_mail(web, site, check_now):
    services.sync_checks()
    Check.objects.update(muted_until=timezone.now() + timedelta(hours=1))
    break_site(web)
    check_now()
    assert mail.outbox == []
    assert TestResult.objects.get().status == "failed"  # still checked and recorded


@MAIL_MANAGERS
def test_an_expired_mute_mails_again(web, site, check_now):
    services.sync_checks()
    Check.objects.update(muted_until=timezone.now() - timedelta(minutes=1))
    break_site(web)
    check_now()
    assert len(mail.outbox) == 1


@MAIL_MANAGERS
def test_an_invalid_script_alerts_like_any_failure(web, check_now):
    site = make_site("blog", web.host, name="Blog")
    make_test("evil", name="Evil", body='go {{ site.url }}\nrun "import os"', sites=[site])
    check_now()
    (message,) = mail.outbox
    assert "Status:  error" in message.body
    assert "Line 2: run \"import os\"" in message.body


@MAIL_MANAGERS
def test_nothing_is_sent_inside_the_transaction_and_a_rollback_leaves_no_alert(web, site):
    """The alert is a row written with the result; a run inside a
    transaction sends nothing, and rolling it back takes the alert along."""
    break_site(web)

    def run_then_roll_back() -> None:
        with transaction.atomic():
            services.run_checks(services.select_checks(), workers=0)
            (delivery,) = Delivery.objects.all()
            assert (delivery.kind, delivery.status, delivery.result) == ("failure", "pending", TestResult.objects.get())
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        run_then_roll_back()
    assert mail.outbox == []
    assert not Delivery.objects.exists()
    assert not TestResult.objects.exists()
    outbox.send_pending()
    assert mail.outbox == []


# -- webhooks ----------------------------------------------------------------------


def test_webhooks_receive_a_json_post_on_failure_and_recovery(web, site, hook, check_now):
    with override_settings(KONG_WEBHOOKS=[hook.url("/hook")]):
        break_site(web)
        check_now()
        fix_site(web)
        check_now()
    failure, recovery = hook.requests_to("/hook")
    assert failure.method == "POST"
    assert failure.headers["content-type"] == "application/json"
    data = json.loads(failure.body)
    result = TestResult.objects.filter(succeeded=False).get()
    assert data == {
        "event": "failure",
        "site": "ljworld",
        "test": "front-page",
        "server": None,
        "status": "failed",
        "reason": "code 500 != 200 at line 2",
        "failed_line": 2,
        "run_date": result.run_date.isoformat(),
        "duration_ms": result.duration,
        "consecutive_failures": 1,
        "url": f"http://kong.example.com/kong/result/{result.pk}/",
        # What Slack and Mattermost incoming webhooks show.
        "text": f"Kong FAILED: Lawrence Journal-World / Front page (failed: code 500 != 200 at line 2) "
        f"http://kong.example.com/kong/result/{result.pk}/",
    }
    assert json.loads(recovery.body)["event"] == "recovery"
    assert "hunter2" not in (failure.body + recovery.body).decode()


@MAIL_MANAGERS
def test_an_unreachable_webhook_does_not_break_the_run(web, site, check_now, caplog):
    with override_settings(KONG_WEBHOOKS=[f"http://127.0.0.1:{closed_port()}/hook"]):
        break_site(web)
        with caplog.at_level(logging.WARNING, logger="kong.notifiers"):
            report = check_now()
    assert report.results[0].status == "failed"
    assert TestResult.objects.count() == 1
    assert len(mail.outbox) == 1  # the other notifier still delivered
    assert "WebhookNotifier (127.0.0.1) could not deliver failure" in caplog.text
    hook = Delivery.objects.get(notifier="kong.notifiers.webhook.WebhookNotifier")
    assert (hook.status, hook.attempts) == ("pending", 1)  # retried later, with its error on the row
    assert "Connection refused" in hook.error


def test_a_failing_webhook_does_not_stop_the_others(web, site, hook, check_now):
    with override_settings(KONG_WEBHOOKS=[f"http://127.0.0.1:{closed_port()}/down", hook.url("/hook")]):
        break_site(web)
        check_now()
    assert len(hook.requests_to("/hook")) == 1


# -- the notifier registry -----------------------------------------------------------

SENT: list[str] = []


class RecordingNotifier(Notifier):
    """A third-party notifier, loaded from KONG_NOTIFIERS by dotted path."""

    def send(self, event: Event) -> None:
        SENT.append(f"{event.kind}:{event.result.site.slug}")


class BrokenNotifier(Notifier):
    def send(self, event: Event) -> None:
        raise NotifierError("pager service is down", retry=True)


@override_settings(
    KONG_NOTIFIERS=["tests.test_notifiers.BrokenNotifier", "tests.test_notifiers.RecordingNotifier"]
)
def test_custom_notifiers_are_loaded_by_dotted_path_and_one_failing_does_not_stop_the_next(
    web, site, check_now, caplog
):
    SENT.clear()
    break_site(web)
    check_now()
    assert SENT == ["failure:ljworld"]
    assert "pager service is down" in caplog.text


@MAIL_MANAGERS
def test_notify_returns_how_many_delivered(web, site, check_now):
    check_now()
    check = Check.objects.select_related("last_result").get()
    assert notify(Event(kind="failure", check=check, result=check.last_result)) == 1
    assert len(mail.outbox) == 1


@override_settings(KONG_MAIL_MANAGERS=True, MANAGERS=[])
def test_mail_with_nobody_to_send_to_is_a_delivery_error_not_a_crash(web, site, check_now, caplog):
    break_site(web)
    check_now()
    assert mail.outbox == []
    assert "MANAGERS/ADMINS is empty" in caplog.text
