"""The admin, driven through Django's test client as a logged-in superuser."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from kong import services
from kong.models import Check, Site, Test, TestResult
from tests.factories import make_server, make_site, make_test, make_type

pytestmark = pytest.mark.django_db

PASSWORD = "hunter2-correct-horse"


@pytest.fixture
def fleet() -> dict[str, Any]:
    """60 sites of two types on two servers, three tests, and some history."""
    news, shop = make_type("news", name="News site"), make_type("shop", name="Shop")
    web1, web2 = make_server("web1"), make_server("web2")
    sites = [
        make_site(
            f"site-{number:02d}",
            f"site-{number:02d}.example.com",
            name=f"Site {number:02d}",
            type=news if number % 2 else shop,
            servers=[web1] if number < 30 else [web2],
            is_live=number != 59,
            variables={"username": "ops", "password": f"{PASSWORD}-{number}", "section": "news"},
        )
        for number in range(60)
    ]
    front = make_test("front-page", types=[news, shop])
    login = make_test("login", body="go {{ site.url }}/login/\nfv 1 password {{ password }}", types=[news])
    make_test("old-check", is_active=False, sites=sites[:2])
    services.sync_checks()
    broken = Check.objects.get(test=front, site=sites[3])
    result = TestResult.objects.create(
        test=front, site=sites[3], status="failed", succeeded=False, reason="code 500 != 200 at line 2"
    )
    broken.apply_result(result)
    broken.save()
    for site in sites[:10]:
        TestResult.objects.create(test=front, site=site, status="passed", succeeded=True, duration=120)
    return {"news": news, "shop": shop, "web1": web1, "web2": web2, "sites": sites, "front": front, "login": login}


def url(name: str, *args: Any) -> str:
    return reverse(f"admin:kong_{name}", args=args)


def new_test_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "Front page check",
        "slug": "front-page-check",
        "body": 'go {{ site.url }}\ncode 200\nfind "Latest News"',
        "schedule": "*/10 * * * *",
        "timeout": "",
        "is_active": "on",
        "sites": [],
        "types": [],
    }
    data.update(overrides)
    return data




def site_form(site: Site, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": site.name,
        "slug": site.slug,
        "type": site.type_id or "",
        "servername": site.servername,
        "servers": [server.pk for server in site.servers.all()],
        "is_live": "on" if site.is_live else "",
        "variables": json.dumps(site.variables),
        "settings_module": site.settings_module,
        "python_path": site.python_path,
    }
    data.update(overrides)
    return data


def body_errors(response: Any) -> list[str]:
    return list(response.context["adminform"].form.errors.get("body", []))


# -- changelists -------------------------------------------------------------


def test_site_changelist_shows_sixty_sites_without_a_query_per_row(
    admin_client: Client, fleet: dict[str, Any], django_assert_max_num_queries: Any
) -> None:
    with django_assert_max_num_queries(12):
        response = admin_client.get(url("site_changelist"))
    assert response.status_code == 200
    assert response.context["cl"].result_count == 60
    html = response.content.decode()
    assert "Site 00" in html
    assert "Site 59" in html
    assert "web1" in html
    assert "web2" in html


def test_site_search_and_filters(admin_client: Client, fleet: dict[str, Any]) -> None:
    found = admin_client.get(url("site_changelist"), {"q": "site-07.example"})
    assert [site.slug for site in found.context["cl"].result_list] == ["site-07"]
    by_type = admin_client.get(url("site_changelist"), {"type__id__exact": fleet["news"].pk})
    assert by_type.context["cl"].result_count == 30
    by_server = admin_client.get(url("site_changelist"), {"servers__id__exact": fleet["web2"].pk})
    assert by_server.context["cl"].result_count == 30
    not_live = admin_client.get(url("site_changelist"), {"is_live__exact": "0"})
    assert [site.slug for site in not_live.context["cl"].result_list] == ["site-59"]


def test_site_changelist_counts_failing_checks(admin_client: Client, fleet: dict[str, Any]) -> None:
    response = admin_client.get(url("site_changelist"))
    failing = {site.slug: site.failing_total for site in response.context["cl"].result_list if site.failing_total}
    assert failing == {"site-03": 1}


def test_secret_variables_never_show_in_the_site_changelist(admin_client: Client, fleet: dict[str, Any]) -> None:
    html = admin_client.get(url("site_changelist")).content.decode()
    assert PASSWORD not in html
    assert "password=********" in html
    assert "section=news" in html  # plain variables stay readable


def test_test_changelist_search_and_filters(admin_client: Client, fleet: dict[str, Any]) -> None:
    response = admin_client.get(url("test_changelist"))
    assert response.status_code == 200
    assert response.context["cl"].result_count == 3
    inactive = admin_client.get(url("test_changelist"), {"is_active__exact": "0"})
    assert [test.slug for test in inactive.context["cl"].result_list] == ["old-check"]
    by_body = admin_client.get(url("test_changelist"), {"q": "login/"})
    assert [test.slug for test in by_body.context["cl"].result_list] == ["login"]


def test_testresult_changelist_filters_by_status_and_date(admin_client: Client, fleet: dict[str, Any]) -> None:
    response = admin_client.get(url("testresult_changelist"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "code 500 != 200 at line 2" in html
    failed = admin_client.get(url("testresult_changelist"), {"status__exact": "failed"})
    assert [result.site.slug for result in failed.context["cl"].result_list] == ["site-03"]
    today = timezone.now()
    by_day = admin_client.get(
        url("testresult_changelist"),
        {"run_date__year": today.year, "run_date__month": today.month, "run_date__day": today.day},
    )
    assert by_day.context["cl"].result_count == 11
    searched = admin_client.get(url("testresult_changelist"), {"q": "site-03"})
    assert {result.site.slug for result in searched.context["cl"].result_list} == {"site-03"}


def test_testresult_admin_is_read_only(admin_client: Client, fleet: dict[str, Any]) -> None:
    result = TestResult.objects.filter(status="failed").get()
    assert admin_client.get(url("testresult_add")).status_code == 403
    page = admin_client.get(url("testresult_change", result.pk))
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    admin_client.post(url("testresult_change", result.pk), {"status": "passed", "reason": ""})
    result.refresh_from_db()
    assert result.status == "failed"


def test_check_changelist_filters_and_mutes(admin_client: Client, fleet: dict[str, Any]) -> None:
    total = Check.objects.count()
    listing = admin_client.get(url("check_changelist"))
    assert listing.status_code == 200
    assert listing.context["cl"].result_count == total
    failed = admin_client.get(url("check_changelist"), {"status__exact": "failed"})
    [broken] = failed.context["cl"].result_list
    assert "code 500 != 200 at line 2" in failed.content.decode()

    response = admin_client.post(
        url("check_changelist"), {"action": "mute_for_an_hour", "_selected_action": [broken.pk]}, follow=True
    )
    assert "1 check(s) muted until" in response.content.decode()
    broken.refresh_from_db()
    assert broken.is_muted()
    assert broken.muted_until is not None
    assert broken.muted_until - timezone.now() > timedelta(minutes=59)
    muted = admin_client.get(url("check_changelist"), {"muted": "yes"})
    assert [check.pk for check in muted.context["cl"].result_list] == [broken.pk]

    admin_client.post(url("check_changelist"), {"action": "unmute", "_selected_action": [broken.pk]})
    broken.refresh_from_db()
    assert broken.muted_until is None
    assert admin_client.get(url("check_add")).status_code == 403


def test_type_page_lists_its_sites_inline(admin_client: Client, fleet: dict[str, Any]) -> None:
    response = admin_client.get(url("type_change", fleet["news"].pk))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Site 01" in html
    assert "Site 00" not in html
    assert url("site_change", fleet["sites"][1].pk) in html  # show_change_link


def test_server_changelist_counts_sites(admin_client: Client, fleet: dict[str, Any]) -> None:
    response = admin_client.get(url("server_changelist"))
    assert {server.slug: server.site_total for server in response.context["cl"].result_list} == {
        "web1": 30,
        "web2": 30,
    }


# -- saving a Test validates its script ----------------------------------------


def test_a_script_that_runs_python_cannot_be_saved(admin_client: Client, fleet: dict[str, Any]) -> None:
    site = fleet["sites"][1]
    data = new_test_data(body="go {{ site.url }}\ncode 200\nrun 'import os'", sites=[site.pk])
    response = admin_client.post(url("test_add"), data)
    assert response.status_code == 200
    assert body_errors(response) == [
        f"Line 3: 'run' executes Python code and is not allowed in safe mode (rendered for site \"{site.name}\")"
    ]
    assert not Test.objects.filter(slug="front-page-check").exists()


def test_an_unterminated_quote_names_the_line(admin_client: Client, fleet: dict[str, Any]) -> None:
    data = new_test_data(body='go {{ site.url }}\nfind "Latest News', types=[fleet["shop"].pk])
    response = admin_client.post(url("test_add"), data)
    [error] = body_errors(response)
    assert error.startswith("Line 2: cannot parse")
    assert "unterminated quote" in error
    # No own sites: the first live site of its types is used.
    assert error.endswith('(rendered for site "Site 00")')
    assert not Test.objects.filter(slug="front-page-check").exists()


def test_the_body_is_rendered_with_the_sample_sites_variables(admin_client: Client, fleet: dict[str, Any]) -> None:
    site = make_site("tricky", "tricky.example.com", name="Tricky", variables={"path": "/`id`"})
    data = new_test_data(body="go {{ site.url }}{{ path }}", sites=[site.pk])
    [error] = body_errors(admin_client.post(url("test_add"), data))
    assert error.startswith("Line 1: backticks are not allowed in safe mode")
    assert error.endswith('(rendered for site "Tricky")')


def test_errors_never_echo_a_secret(admin_client: Client, fleet: dict[str, Any]) -> None:
    site = fleet["sites"][1]
    data = new_test_data(body='go {{ site.url }}\nfv 1 password "{{ password }}', sites=[site.pk])
    [error] = body_errors(admin_client.post(url("test_add"), data))
    assert error.startswith("Line 2: cannot parse")
    assert site.variables["password"] not in error
    assert "********" in error


def test_a_test_without_sites_is_checked_against_a_sample_site(admin_client: Client, fleet: dict[str, Any]) -> None:
    data = new_test_data(body="go {{ site.url }}\nsave_html page.html")
    [error] = body_errors(admin_client.post(url("test_add"), data))
    assert error == "Line 2: 'save_html' writes files and is not allowed in safe mode (rendered for site \"Sample site\")"


def test_a_template_error_is_reported(admin_client: Client, fleet: dict[str, Any]) -> None:
    data = new_test_data(body="go {{ site.url }}\n{% if %}", sites=[fleet["sites"][1].pk])
    [error] = body_errors(admin_client.post(url("test_add"), data))
    assert error.startswith("Template error:")
    assert error.endswith('(rendered for site "Site 01")')


def test_a_valid_test_saves(admin_client: Client, fleet: dict[str, Any]) -> None:
    site = fleet["sites"][1]
    data = new_test_data(sites=[site.pk], types=[fleet["shop"].pk], schedule=" 0  *  * * 1-5 ")
    response = admin_client.post(url("test_add"), data)
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    test = Test.objects.get(slug="front-page-check")
    assert list(test.sites.all()) == [site]
    assert list(test.types.all()) == [fleet["shop"]]
    assert test.schedule == "0 * * * 1-5"


def test_a_six_field_schedule_is_rejected(admin_client: Client, fleet: dict[str, Any]) -> None:
    response = admin_client.post(url("test_add"), new_test_data(schedule="0 */5 * * * *"))
    errors = response.context["adminform"].form.errors
    [error] = errors["schedule"]
    assert "exactly 5 fields" in error
    assert "got 6" in error
    assert not Test.objects.filter(slug="front-page-check").exists()


def test_save_as_new_copies_a_test(admin_client: Client, fleet: dict[str, Any]) -> None:
    front = fleet["front"]
    page = admin_client.get(url("test_change", front.pk))
    assert b'name="_saveasnew"' in page.content
    data = new_test_data(
        name="Front page (copy)",
        slug="front-page-copy",
        body=front.body,
        types=[fleet["news"].pk],
        _saveasnew="Save as new",
    )
    response = admin_client.post(url("test_change", front.pk), data)
    assert response.status_code == 302
    copy = Test.objects.get(slug="front-page-copy")
    assert copy.pk != front.pk
    assert list(copy.types.all()) == [fleet["news"]]
    assert Test.objects.get(pk=front.pk).name == front.name


# -- Site variables ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ('["a", "b"]', "not a list"),
        ('"secret"', "not a string"),
        ('{"my-var": 1}', "a template cannot use 'my-var'"),
        ('{"site": "x"}', "'site' is set by Kong for every script"),
    ],
)
def test_site_variables_must_be_a_usable_json_object(
    admin_client: Client, fleet: dict[str, Any], variables: str, message: str
) -> None:
    site = fleet["sites"][4]
    response = admin_client.post(url("site_change", site.pk), site_form(site, variables=variables))
    assert response.status_code == 200
    [error] = response.context["adminform"].form.errors["variables"]
    assert message in error
    site.refresh_from_db()
    assert site.variables["section"] == "news"


def test_site_change_form_masks_secrets_and_keeps_them(admin_client: Client, fleet: dict[str, Any]) -> None:
    site = fleet["sites"][4]
    secret = site.variables["password"]
    page = admin_client.get(url("site_change", site.pk))
    assert page.status_code == 200
    assert secret not in page.content.decode()
    masked = page.context["adminform"].form.initial["variables"]
    assert masked == {"username": "ops", "password": "********", "section": "news"}

    # Saving the form as shown keeps the stored secret and applies other edits.
    edited = dict(masked, section="sport")
    response = admin_client.post(url("site_change", site.pk), site_form(site, variables=json.dumps(edited)))
    assert response.status_code == 302
    site.refresh_from_db()
    assert site.variables == {"username": "ops", "password": secret, "section": "sport"}

    # A new value replaces it.
    edited["password"] = "new-secret"
    admin_client.post(url("site_change", site.pk), site_form(site, variables=json.dumps(edited)))
    site.refresh_from_db()
    assert site.variables["password"] == "new-secret"


NESTED = {
    "username": "ops",
    "login": {"user": "alice", "password": "nested-hunter2-secret"},
    "api_keys": ["key-one-secret", "key-two-secret"],
    "section": "news",
}
NESTED_SECRETS = ("nested-hunter2-secret", "key-one-secret", "key-two-secret")


def test_nested_secrets_are_masked_in_the_form_and_the_changelist(admin_client: Client, fleet: dict[str, Any]) -> None:
    site = fleet["sites"][4]
    site.variables = NESTED
    site.save()
    page = admin_client.get(url("site_change", site.pk))
    masked = page.context["adminform"].form.initial["variables"]
    assert masked == {
        "username": "ops",
        "login": {"user": "alice", "password": "********"},
        "api_keys": ["********", "********"],
        "section": "news",
    }
    changelist = admin_client.get(reverse("admin:kong_site_changelist"), {"q": site.slug}).content.decode()
    for text in (page.content.decode(), changelist):
        assert not any(secret in text for secret in NESTED_SECRETS)
        assert "nested-hunter2" not in text  # not even cut short
    assert "login={&quot;user&quot;: &quot;alice&quot;" in changelist


def test_nested_masked_values_are_restored_on_save(admin_client: Client, fleet: dict[str, Any]) -> None:
    site = fleet["sites"][4]
    site.variables = NESTED
    site.save()
    masked = admin_client.get(url("site_change", site.pk)).context["adminform"].form.initial["variables"]
    edited = json.loads(json.dumps(masked))
    edited["login"]["user"] = "bob"
    edited["api_keys"].append("key-three-secret")
    response = admin_client.post(url("site_change", site.pk), site_form(site, variables=json.dumps(edited)))
    assert response.status_code == 302
    site.refresh_from_db()
    assert site.variables["login"] == {"user": "bob", "password": "nested-hunter2-secret"}
    assert site.variables["api_keys"] == ["key-one-secret", "key-two-secret", "key-three-secret"]

    # A mask where nothing is stored cannot be saved: the value must be typed.
    edited["login"]["pin"] = "********"
    response = admin_client.post(url("site_change", site.pk), site_form(site, variables=json.dumps(edited)))
    assert response.status_code == 200
    [error] = response.context["adminform"].form.errors["variables"]
    assert "'login.pin'" in error


def test_view_only_staff_never_see_nested_secrets(fleet: dict[str, Any]) -> None:
    site = fleet["sites"][4]
    site.variables = NESTED
    site.save()
    viewer = User.objects.create_user("viewer", password="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_site"))
    client = Client()
    client.force_login(viewer)
    html = client.get(url("site_change", site.pk)).content.decode()
    assert not any(secret in html for secret in NESTED_SECRETS)
    assert "login=" in html


def test_view_only_staff_never_see_secrets(fleet: dict[str, Any]) -> None:
    viewer = User.objects.create_user("viewer", password="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_site"))
    client = Client()
    client.force_login(viewer)
    site = fleet["sites"][4]
    page = client.get(url("site_change", site.pk))
    assert page.status_code == 200
    html = page.content.decode()
    assert site.variables["password"] not in html
    assert "password=********" in html


@pytest.mark.parametrize("model", ["site", "test", "testresult", "check", "type", "server"])
def test_changelists_do_not_query_per_row(
    admin_client: Client, fleet: dict[str, Any], django_assert_max_num_queries: Any, model: str
) -> None:
    with django_assert_max_num_queries(12):
        response = admin_client.get(url(f"{model}_changelist"))
    assert response.status_code == 200
