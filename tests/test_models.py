"""kong.models: inventory helpers, results, and the alert decision on Check."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from kong.models import Alert, Check, Server, Site, Test, TestResult, Type, servername_problem
from tests.factories import make_server, make_site, make_test, make_type

pytestmark = pytest.mark.django_db


def make_check(**fields: object) -> Check:
    site = make_site()
    test = make_test(sites=[site])
    return Check.objects.create(test=test, site=site, **fields)


def result_for(check: Check, status: str, at: timedelta = timedelta()) -> TestResult:
    return TestResult.objects.create(
        test=check.test,
        site=check.site,
        status=status,
        succeeded=status == "passed",
        run_date=timezone.now() + at,
    )


def alerts(check: Check, statuses: str) -> list[str | None]:
    """Feed space-separated statuses to ``check``; the alert each one raised."""
    raised = []
    for n, status in enumerate(statuses.split()):
        raised.append(check.apply_result(result_for(check, status, timedelta(seconds=n))).alert)
    return raised


F, R = Alert.FAILURE, Alert.RECOVERY


def test_first_failure_alerts_once_and_an_alerted_failure_recovers():
    check = make_check()
    assert alerts(check, "passed failed failed error passed passed") == [None, F, None, None, R, None]


@override_settings(KONG_MAIL_ON_EVERY_FAILURE=True)
def test_every_failure_alerts():
    assert alerts(make_check(), "failed timeout crashed passed") == [F, F, F, R]


@override_settings(KONG_MAIL_ON_CONSECUTIVE_FAILURES=3)
def test_consecutive_failure_threshold():
    assert alerts(make_check(), "failed failed passed failed failed failed failed passed") == [
        None, None, None, None, None, F, None, R,
    ]  # fmt: skip


@override_settings(KONG_MAIL_ON_CONSECUTIVE_FAILURES=2, KONG_MAIL_ON_EVERY_FAILURE=True)
def test_every_failure_from_the_threshold_on():
    assert alerts(make_check(), "failed failed failed") == [None, F, F]


@override_settings(KONG_MAIL_ON_RECOVERY=False)
def test_no_recovery_alert_when_turned_off():
    assert alerts(make_check(), "failed passed") == [F, None]


def test_muted_checks_raise_no_alert_but_still_count():
    check = make_check(muted_until=timezone.now() + timedelta(hours=1))
    assert alerts(check, "failed failed") == [None, None]
    assert check.consecutive_failures == 2
    assert check.is_muted()
    assert not check.is_muted(timezone.now() + timedelta(hours=2))


def test_apply_result_moves_status_since_only_on_a_change():
    check = make_check()
    first = result_for(check, "failed")
    transition = check.apply_result(first)
    assert transition.previous_status == "pending"
    assert (check.status, check.status_since, check.last_result, check.last_run_at) == (
        "failed",
        first.run_date,
        first,
        first.run_date,
    )
    check.apply_result(result_for(check, "failed", timedelta(minutes=10)))
    assert check.status_since == first.run_date
    assert check.is_failing
    recovered = result_for(check, "passed", timedelta(minutes=20))
    check.apply_result(recovered)
    assert check.status_since == recovered.run_date
    assert not check.is_failing


def test_apply_result_does_not_save():
    check = make_check()
    check.apply_result(result_for(check, "failed"))
    check.refresh_from_db()
    assert (check.status, check.consecutive_failures) == ("pending", 0)


def test_labels_and_strings():
    web1 = make_server("web1")
    check = make_check()
    assert check.label == "ljworld/front-page"
    via = Check.objects.create(test=check.test, site=check.site, server=web1)
    assert via.label == "ljworld/front-page@web1"
    assert str(via) == "Front Page on Ljworld via web1"
    assert str(result_for(check, "passed")) == "Front Page on Ljworld: passed"


def test_results_are_newest_first_and_link_to_their_page():
    check = make_check()
    old = result_for(check, "failed", timedelta(hours=-1))
    new = result_for(check, "passed")
    assert list(TestResult.objects.all()) == [new, old]
    assert list(TestResult.objects.failures()) == [old]
    assert new.get_absolute_url() == f"/kong/result/{new.pk}/"
    assert new.absolute_url() == f"http://kong.example.com/kong/result/{new.pk}/"


def test_failing_and_due_querysets():
    check = make_check()
    assert list(Check.objects.failing()) == []
    assert list(Check.objects.due()) == [check]  # never ran: due at once
    Check.objects.update(status="error", next_due_at=timezone.now() + timedelta(minutes=5))
    assert list(Check.objects.failing()) == [check]
    assert list(Check.objects.due()) == []


def test_effective_timeout_falls_back_to_the_setting():
    assert make_test("a", timeout=5).effective_timeout == 5
    with override_settings(KONG_CHECK_TIMEOUT=42):
        assert make_test("b").effective_timeout == 42


def test_site_host_and_url():
    site = Site(servername="https://www.ljworld.com:8443/news")
    assert (site.url, site.host) == ("https://www.ljworld.com:8443/news", "www.ljworld.com")
    assert Site(servername="www.ljworld.com").host == "www.ljworld.com"


@override_settings(KONG_SECRET_VARIABLES="PIN")
def test_the_secret_pattern_is_a_setting():
    site = Site(variables={"pin": "1234", "password": "visible-now"})
    assert site.secret_values() == ["1234"]


def test_natural_keys_move_an_inventory_between_databases(tmp_path):
    news = make_type("news")
    web1 = make_server("web1")
    site = make_site("ljworld", "www.ljworld.com", type=news, servers=[web1], variables={"section": "news"})
    make_test("front-page", sites=[site], types=[news])
    dump = tmp_path / "inventory.json"
    call_command(
        "dumpdata", "kong.server", "kong.type", "kong.site", "kong.test",
        "--natural-primary", "--natural-foreign", "--output", str(dump),
    )  # fmt: skip
    assert '"pk"' not in dump.read_text()
    for model in (Test, Site, Server, Type):
        model.objects.all().delete()
    call_command("loaddata", str(dump), verbosity=0)
    site = Site.objects.get(slug="ljworld")
    assert site.type.slug == "news"
    assert list(site.servers.values_list("slug", flat=True)) == ["web1"]
    assert site.variables == {"section": "news"}
    test = Test.objects.get_by_natural_key("front-page")
    assert list(test.sites.all()) == [site]
    assert list(test.types.values_list("slug", flat=True)) == ["news"]


def test_nested_secret_values_are_secret_too():
    site = Site(
        variables={
            "login": {"user": "ops", "password": "hunter2"},
            "api_keys": ["k-1", "k-2"],
            "tokens": {"read": "r-9"},
            "section": "news",
        }
    )
    assert set(site.secret_values()) == {"hunter2", "k-1", "k-2", "r-9"}


# -- servernames -------------------------------------------------------------------


@pytest.mark.parametrize(
    "servername",
    ["www.example.com", "127.0.0.1:8000", "web1:8080", "localhost", "http://x.org/path?q=1", "https://[::1]:8443/"],
)
def test_a_servername_is_a_host_or_an_http_url(servername):
    assert servername_problem(servername) is None


@pytest.mark.parametrize(
    ("servername", "words"),
    [
        ("javascript:alert(1)//", "neither a host"),
        ("javascript://%0aalert(1)", "not javascript:"),
        ("file:///etc/passwd", "not file:"),
        ("ftp://example.com", "not ftp:"),
        ("http://", "not a host name"),
        ("www.example .com", "no spaces"),
        ("http://user:secret@example.com", "credentials"),
        ("example.com:99999", "neither a host"),
    ],
)
def test_a_servername_that_is_not_an_http_host_is_refused(servername, words):
    """Regression: ``javascript:alert(1)//`` was stored and became a live link in the admin."""
    assert words in (servername_problem(servername) or "")
    site = Site(name="X", slug="x", servername=servername)
    with pytest.raises(ValidationError) as error:
        site.full_clean()
    assert "servername" in error.value.message_dict


@pytest.mark.django_db
def test_the_admin_links_only_a_well_formed_http_servername():
    from django.contrib import admin

    from kong.admin import SiteAdmin

    site_admin = SiteAdmin(Site, admin.site)
    good = make_site("good", "www.example.com")
    stored = make_site("stored", "javascript://%0aalert(1)")  # from before validation, or a raw update
    assert site_admin.site_link(good).startswith('<a href="http://www.example.com"')
    assert site_admin.site_link(stored) == "javascript://%0aalert(1)"
    assert "<a" not in site_admin.site_link(stored)
