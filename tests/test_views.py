"""The dashboard's pages (kong/views.py): access, run-now, escaping, masking,
the matrix, histories, feeds, and constant query counts."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import resolve, reverse
from django.utils import timezone

from kong import run_now, services
from kong.engine.runner import Outcome
from kong.masking import MASK
from kong.models import Check, DailyRollup, Site, Test, TestResult
from kong.rollups import local_day
from tests.factories import make_server, make_site, make_test, make_type, make_user

pytestmark = pytest.mark.django_db

HOSTILE = '<script>window.kongPwned=1</script><img src=x onerror="window.kongPwned=2">'


# -- helpers ---------------------------------------------------------------


def check_for(site: Site, test: Test) -> Check:
    services.sync_checks()
    return Check.objects.select_related("test", "site", "server").get(site=site, test=test)


def add_result(
    site: Site,
    test: Test,
    status: str = "passed",
    *,
    duration: float = 120.0,
    reason: str = "",
    failed_line: int | None = None,
    log: str = "",
    ago: timedelta | None = None,
) -> TestResult:
    """Record an outcome the way check_sites does (services.record)."""
    result = services.record(check_for(site, test), Outcome(status, duration, reason, failed_line, log))
    if ago is not None:
        when = timezone.now() - ago
        TestResult.objects.filter(pk=result.pk).update(run_date=when)
        Check.objects.filter(last_result=result).update(last_run_at=when, status_since=when)
        result.refresh_from_db()
    return result


def add_history(
    site: Site, test: Test, count: int, *, every: timedelta = timedelta(minutes=10), base: float = 100.0
) -> None:
    """``count`` older results in one INSERT, every fifth one failed."""
    now = timezone.now()
    TestResult.objects.bulk_create(
        TestResult(
            site=site,
            test=test,
            run_date=now - every * (index + 1),
            duration=base + index % 7 * 10,
            succeeded=index % 5 != 0,
            status="passed" if index % 5 else "failed",
            reason="" if index % 5 else "no match to 'Latest News'",
        )
        for index in range(count)
    )


def build_fleet(sites: int, tests: int, history: int, prefix: str = "a") -> None:
    """A fleet of ``sites`` x ``tests`` with ``history`` old results per pair and
    a latest result on each check; the first site fails its first test."""
    kinds = [make_type(f"{prefix}-news"), make_type(f"{prefix}-blogs")]
    servers = [make_server(f"{prefix}-web1"), make_server(f"{prefix}-web2")]
    site_rows = [
        make_site(f"{prefix}-site-{n:03d}", type=kinds[n % 2], servers=[servers[n % 2]]) for n in range(sites)
    ]
    test_rows = [make_test(f"{prefix}-test-{n:02d}", types=kinds) for n in range(tests)]
    services.sync_checks()
    for site in site_rows:
        for test in test_rows:
            add_history(site, test, history)
    checks = Check.objects.filter(site__in=site_rows).select_related("test", "site", "server")
    for check in checks:
        failing = check.site == site_rows[0] and check.test == test_rows[0]
        outcome = Outcome("failed" if failing else "passed", 150.0, "no match" if failing else "", 2 if failing else None)
        services.record(check, outcome)


def add_rollup(site: Site, test: Test, days_ago: int, *, runs: int = 48, failures: int = 0) -> DailyRollup:
    """A day folded by kong_prune whose raw results are gone."""
    return DailyRollup.objects.create(
        site=site,
        test=test,
        day=local_day(timezone.now()) - timedelta(days=days_ago),
        runs=runs,
        failures=failures,
        mean_duration=110.0,
        p95_duration=300.0,
        max_duration=450.0,
    )


def login(client: Client, *, can_run: bool = False) -> User:
    user = make_user(run=can_run)
    client.force_login(user)
    return user


@pytest.fixture
def pair() -> tuple[Site, Test]:
    site = make_site("ljworld", name="LJWorld", variables={"password": "hunter2-secret"})
    test = make_test("front-page", body='go {{ site.url }}\ncode 200\nfind "Latest News"', sites=[site])
    return site, test


def page_urls(site: Site, test: Test, result: TestResult) -> list[str]:
    return [
        reverse("kong:index"),
        reverse("kong:dashboard"),
        reverse("kong:failed"),
        reverse("kong:site_detail", args=[site.slug]),
        reverse("kong:testresult_for_site", args=[site.slug, test.slug]),
        reverse("kong:result_detail", args=[result.pk]),
        reverse("kong:test_detail", args=[test.slug]),
    ]


# -- who may see what ------------------------------------------------------


def test_every_page_needs_login(client, pair):
    result = add_result(*pair, "failed", reason="boom", failed_line=3)
    for url in page_urls(*pair, result):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/?next="), url


def test_every_page_renders_for_a_logged_in_user(client, pair):
    result = add_result(*pair, "failed", reason="boom", failed_line=3)
    login(client)
    for url in page_urls(*pair, result):
        response = client.get(url)
        assert response.status_code == 200, url
        assert b'<link rel="stylesheet" href="/static/kong/kong.css">' in response.content, url


def test_every_page_is_a_template_response_whose_context_a_host_project_can_read(client, pair):
    site, test = pair
    result = add_result(*pair, "failed", reason="boom", failed_line=3)
    login(client)
    contexts = {url: client.get(url).context_data for url in page_urls(*pair, result)}
    assert all(context is not None for context in contexts.values())
    assert contexts[reverse("kong:site_detail", args=[site.slug])]["site"] == site
    assert contexts[reverse("kong:test_detail", args=[test.slug])]["test"] == test
    assert contexts[reverse("kong:result_detail", args=[result.pk])]["result"] == result


def test_public_dashboard_needs_no_login(client, pair, settings):
    settings.KONG_PUBLIC_DASHBOARD = True
    result = add_result(*pair)
    for url in [*page_urls(*pair, result), reverse("kong:metrics"), reverse("kong:api_status")]:
        assert client.get(url).status_code == 200, url


def test_a_logged_in_user_without_the_view_permission_sees_nothing(client, pair):
    """Regression: any logged-in user (a customer account, say) saw every
    log, script and the whole inventory."""
    site, _ = pair
    result = add_result(*pair, "failed", reason="boom", failed_line=3)
    client.force_login(make_user("customer", view=False))
    for url in [*page_urls(*pair, result), reverse("kong:metrics"), reverse("kong:api_status")]:
        response = client.get(url)
        assert response.status_code == 403, url
        assert site.name.encode() not in response.content, url
    assert client.post(run_url(*pair)).status_code == 403


def test_a_superuser_needs_no_explicit_permission(client, pair):
    result = add_result(*pair)
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_superuser("root", password="pw"))
    assert all(client.get(url).status_code == 200 for url in page_urls(*pair, result))


def test_every_page_sends_a_strict_content_security_policy(client, pair):
    result = add_result(*pair, "failed", reason="boom", failed_line=3)
    login(client)
    for url in [*page_urls(*pair, result), reverse("kong:metrics"), reverse("kong:api_status")]:
        policy = client.get(url)["Content-Security-Policy"]
        assert "script-src 'self'" in policy, url
        assert "unsafe-inline" not in policy, url
        assert "default-src 'none'" in policy, url


def test_kong_templates_hold_no_inline_script_or_style():
    from pathlib import Path

    import kong

    templates = Path(kong.__file__).parent / "templates"
    for template in templates.rglob("*.html"):
        text = template.read_text()
        assert "<style" not in text, template
        assert " style=" not in text, template
        assert re.search(r"<script(?![^>]*\bsrc=)", text) is None, template
        assert re.search(r"\son[a-z]+=", text) is None, template


def test_feeds_answer_403_not_a_login_page(client, pair):
    add_result(*pair)
    assert client.get(reverse("kong:metrics")).status_code == 403
    assert client.get(reverse("kong:api_status")).status_code == 403
    login(client)
    assert client.get(reverse("kong:metrics")).status_code == 200


def test_pages_are_get_only(client, pair):
    login(client)
    assert client.post(reverse("kong:index")).status_code == 405


# -- run now ---------------------------------------------------------------
# The view only claims and hands the checks to a ``kong_run`` process; here
# that launch is recorded instead of made. tests/test_run_now.py starts the
# real processes.


def run_url(site: Site, test: Test) -> str:
    return reverse("kong:run_test_on_site", args=[site.slug, test.slug])


@pytest.fixture
def launched(monkeypatch) -> list[tuple[str, list[int]]]:
    """``(token, check ids)`` of each kong_run the view would have started."""
    calls: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(run_now, "launch", lambda token, ids: calls.append((token, list(ids))))
    return calls


def test_run_now_anonymous_is_sent_to_login(client, pair, settings, launched):
    settings.KONG_PUBLIC_DASHBOARD = True  # still needs login
    response = client.post(run_url(*pair))
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert launched == []
    assert not Check.objects.exclude(claim_token="").exists()


def test_run_now_without_the_permission_is_forbidden(client, pair, launched):
    login(client)
    assert client.post(run_url(*pair)).status_code == 403
    assert launched == []
    assert not Check.objects.exclude(claim_token="").exists()


def test_run_now_is_rate_limited_per_user(client, pair, launched):
    from kong import run_now

    login(client, can_run=True)
    codes = [client.post(run_url(*pair)).status_code for _ in range(run_now.RATE_LIMIT + 1)]
    assert codes[:-1] == [302] * run_now.RATE_LIMIT
    assert codes[-1] == 429
    other = Client()
    other.force_login(make_user("other-ops", run=True))
    assert other.post(run_url(*pair)).status_code == 302  # the limit is per user


def test_run_now_is_post_only(client, pair, launched):
    login(client, can_run=True)
    assert client.get(run_url(*pair)).status_code == 405
    assert launched == []


def test_run_now_claims_the_check_starts_its_run_and_shows_it_pending(client, pair, launched):
    site, test = pair
    login(client, can_run=True)
    response = client.post(run_url(site, test))
    check = Check.objects.get()
    assert launched == [(check.claim_token, [check.pk])], "one kong_run, for the check this request claimed"
    assert check.claimed_until > timezone.now()
    assert response.status_code == 302
    assert resolve(response["Location"]).url_name == "run_pending"
    page = client.get(response["Location"])
    assert page.status_code == 200
    html = page.content.decode()
    assert "Started Front Page on LJWorld." in html
    assert "running…" in html
    assert not TestResult.objects.exists()


def test_run_now_unknown_pair_is_404(client, pair, launched):
    login(client, can_run=True)
    other = make_test("unrelated")  # applies to no site
    assert client.post(run_url(pair[0], other)).status_code == 404
    assert client.post(reverse("kong:run_test_on_site", args=["nope", "front-page"])).status_code == 404
    assert launched == []


def test_run_now_needs_a_csrf_token(pair, launched):
    site, test = pair
    services.sync_checks()
    client = Client(enforce_csrf_checks=True)
    login(client, can_run=True)
    assert client.post(run_url(site, test)).status_code == 403
    assert launched == []
    # The token the history page's form carries is accepted.
    page = client.get(reverse("kong:testresult_for_site", args=[site.slug, test.slug])).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token, "the history page offers a run-now form"
    response = client.post(run_url(site, test), {"csrfmiddlewaretoken": token.group(1)})
    assert response.status_code == 302
    assert len(launched) == 1


def test_run_button_only_for_holders_of_the_permission(client, pair):
    add_result(*pair)
    url = reverse("kong:site_detail", args=[pair[0].slug])
    login(client)
    assert "Run now" not in client.get(url).content.decode()
    user = User.objects.get()
    user.user_permissions.add(Permission.objects.get(codename="run_check"))
    client.force_login(User.objects.get(pk=user.pk))
    assert "Run now" in client.get(url).content.decode()


# -- escaping and masking ----------------------------------------------------


def test_content_from_checked_sites_is_escaped_everywhere(client):
    site = make_site("hostile", name=f"Evil {HOSTILE}", variables={})
    test = make_test("front-page", name=f"Test {HOSTILE}", body="go {{ site.url }}\ncode 200", sites=[site])
    result = add_result(site, test, "failed", reason=f"no match {HOSTILE}", failed_line=2, log=f"==> {HOSTILE}")
    login(client)
    for url in [*page_urls(site, test, result), reverse("kong:index") + "?partial=1"]:
        html = client.get(url).content.decode()
        assert "<script>window.kongPwned" not in html, url
        assert "<img src=x" not in html, url
        assert "&lt;script&gt;window.kongPwned=1&lt;/script&gt;" in html, url


def test_secrets_are_masked_in_script_log_and_reason(client, pair):
    site, test = pair
    Test.objects.filter(pk=test.pk).update(body="go {{ site.url }}/login?pw={{ password }}\ncode 200")
    result = add_result(site, test, "failed", reason="bad", failed_line=2)
    # A result stored before the secret was masked (or before it was secret).
    TestResult.objects.filter(pk=result.pk).update(
        content="sent hunter2-secret", reason="hunter2-secret refused", script="go x?pw=hunter2-secret"
    )
    login(client)
    for url in [reverse("kong:result_detail", args=[result.pk]), reverse("kong:failed")]:
        html = client.get(url).content.decode()
        assert "hunter2-secret" not in html, url
        assert MASK in html, url


# -- the index -----------------------------------------------------------------


def test_index_matrix_puts_failing_pairs_first_with_rollups(client):
    news, blogs = make_type("news", name="News"), make_type("blogs", name="Blogs")
    web1 = make_server("web1", name="Web 1")
    alpha = make_site("alpha", name="Alpha", type=news, servers=[web1])
    zulu = make_site("zulu", name="Zulu", type=blogs)
    home = make_test("home", name="Home", types=[news, blogs])
    search = make_test("search", name="Search", types=[news, blogs])
    add_result(alpha, home)
    add_result(alpha, search)
    add_result(zulu, home)
    add_result(zulu, search, "failed", reason="no match", failed_line=2)
    login(client)
    html = client.get(reverse("kong:index")).content.decode()
    body = html[html.index('<table class="k-matrix">') :]
    assert body.index("Zulu") < body.index("Alpha"), "the failing site comes first"
    header = body[: body.index("</thead>")]
    assert header.index("Search") < header.index("Home"), "the failing test comes first"
    assert "1 of 4 checks failing" in html
    assert re.search(r"Blogs</a>\s*✗ 1 of 2 failing", html)
    assert re.search(r"News</a>\s*✓ 0 of 2 failing", html)
    assert re.search(r"Web 1</a>\s*✓ 0 of 2 failing", html)
    assert 'scope="col"' in html
    assert 'scope="row"' in html
    assert "✗</span> <span class=\"k-word\">failed</span>" in html  # an icon and a word, not colour alone


def test_a_per_server_test_shows_each_server_in_its_cell(client):
    web1, web2 = make_server("web1", name="Web 1"), make_server("web2", name="Web 2")
    site = make_site("ljworld", name="LJWorld", servers=[web1, web2])
    test = make_test("home", name="Home", sites=[site], per_server=True)
    services.sync_checks()
    checks = {check.server.slug: check for check in Check.objects.select_related("test", "site", "server")}
    services.record(checks["web1"], Outcome("passed", 100.0))
    services.record(checks["web2"], Outcome("failed", 100.0, "down", 2))
    login(client)
    html = client.get(reverse("kong:index")).content.decode()
    cell = re.search(r'<td class="k-cell k-failed">(.*?)</td>', html, re.S)
    assert cell, "the cell takes the worst status of its servers"
    assert '<span class="k-server">Web 1</span>' in cell.group(1)
    assert '<span class="k-server">Web 2</span>' in cell.group(1)
    assert cell.group(1).count("<a ") == 2
    assert re.search(r"Web 2</a>\s*✗ 1 of 1 failing", html)
    assert test.slug in cell.group(1)


def test_index_filters_by_type_server_and_site(client):
    news, blogs = make_type("news"), make_type("blogs")
    web1 = make_server("web1")
    make_site("alpha", name="Alpha", type=news, servers=[web1])
    make_site("bravo", name="Bravo", type=blogs)
    make_site("charlie", name="Charlie", type=news)
    make_test("home", types=[news, blogs])
    services.sync_checks()
    login(client)

    def rows(query: str) -> list[str]:
        html = client.get(reverse("kong:index") + query).content.decode()
        return re.findall(r'<th scope="row"><a href="[^"]+">(\w+)</a>', html)

    assert rows("") == ["Alpha", "Bravo", "Charlie"]
    assert rows("?type=news") == ["Alpha", "Charlie"]
    assert rows("?server=web1") == ["Alpha"]
    assert rows("?q=brav") == ["Bravo"]
    assert rows("?type=news&q=charl") == ["Charlie"]
    assert rows("?type=nothing") == []


def test_index_partial_is_the_live_fragment(client, pair):
    add_result(*pair)
    login(client)
    response = client.get(reverse("kong:index") + "?partial=1")
    html = response.content.decode()
    assert response["X-Kong-Partial"] == "1"
    assert "<html" not in html
    assert 'id="kong-index-live" data-kong-live' in html
    assert 'id="kong-runner-banner" data-kong-live' in html
    full = client.get(reverse("kong:index")).content.decode()
    assert 'data-kong-refresh="15"' in full
    assert '<noscript><meta http-equiv="refresh" content="15"></noscript>' in full


def test_failing_line_is_one_click_from_the_index(client, pair):
    result = add_result(*pair, "failed", reason="no match to 'Latest News'", failed_line=3)
    login(client)
    html = client.get(reverse("kong:index")).content.decode()
    link = reverse("kong:result_detail", args=[result.pk]) + "#failed-line"
    assert f'href="{link}"' in html


# -- the runner banner -------------------------------------------------------


def test_banner_when_checks_stopped_running(client, pair):
    add_result(*pair, ago=timedelta(minutes=23))  # schedule */10: stale after 20 minutes
    login(client)
    html = client.get(reverse("kong:failed")).content.decode()
    assert "Checks last ran" in html
    assert "23 minutes ago" in html
    assert "scheduled every 10\xa0minutes" in html


def test_no_banner_while_checks_run(client, pair):
    add_result(*pair, ago=timedelta(minutes=15))
    login(client)
    assert "Checks last ran" not in client.get(reverse("kong:index")).content.decode()


def test_banner_when_nothing_ever_ran(client, pair):
    services.sync_checks()
    login(client)
    assert "No check has run yet" in client.get(reverse("kong:index")).content.decode()


# -- detail pages --------------------------------------------------------------


def test_history_is_paginated_15_with_chart_and_stats(client, pair):
    site, test = pair
    add_history(site, test, 18)
    add_result(site, test, duration=500)
    add_result(site, test, duration=500)
    login(client)
    url = reverse("kong:testresult_for_site", args=[site.slug, test.slug])
    html = client.get(url).content.decode()
    assert html.count('<tr class="') == 15
    assert "Page 1 of 2 (20 results)" in html
    assert "<svg" in html
    assert "<polyline" in html
    assert html.count("stroke=\"#c62828\"") >= 4, "failures are crossed on the chart"
    assert "80.0% (16 of 20 runs)" in html
    assert re.search(r"<dt>p50</dt><dd>1\d0 ms</dd>", html)
    assert "<dt>p95</dt><dd>500 ms</dd>" in html
    second = client.get(url + "?page=2").content.decode()
    assert second.count('<tr class="') == 5


def test_history_range_limits_what_is_shown(client, pair):
    site, test = pair
    add_result(site, test, ago=timedelta(days=3))
    login(client)
    url = reverse("kong:testresult_for_site", args=[site.slug, test.slug])
    assert "No runs in the last 24h" in client.get(url + "?range=24h").content.decode()
    assert "100.0% (1 of 1 run)" in client.get(url + "?range=7d").content.decode()
    assert "Last 7d" in client.get(url + "?range=bogus").content.decode()


def test_history_shows_rolled_up_days_beyond_the_raw_window(client, pair, settings):
    settings.KONG_RESULT_RETENTION_DAYS = 90
    site, test = pair
    add_rollup(site, test, 200, failures=3)
    add_rollup(site, test, 120)
    add_result(site, test, "failed", reason="boom")
    assert not TestResult.objects.filter(run_date__lt=timezone.now() - timedelta(days=1)).exists()
    today = local_day(timezone.now())
    old, older = (f"{today - timedelta(days=n):%Y-%m-%d}" for n in (120, 200))
    login(client)
    url = reverse("kong:testresult_for_site", args=[site.slug, test.slug])
    html = client.get(url + "?range=365d").content.decode()
    assert "Daily history, last 365 days" in html
    titles = re.findall(r"<title>(\d{4}-\d\d-\d\d: [^<]*)</title>", html)
    assert titles == [
        f"{older}: 48 runs, 3 failed (93.8% passed), mean 110 ms, p95 300 ms",
        f"{old}: 48 runs, 0 failed (100.0% passed), mean 110 ms, p95 300 ms",
        f"{today:%Y-%m-%d}: 1 run, 1 failed (0.0% passed), mean 120 ms, p95 120 ms",
    ]
    row = r'<time datetime="([\d-]+)">[\d-]+</time></td><td class="k-num">(\d+)</td><td class="k-num">(\d+)</td>'
    failed_days = re.findall(row, html)
    assert failed_days == [(f"{today:%Y-%m-%d}", "1", "1"), (older, "48", "3")]
    assert "95.9% (4 of 97 runs failed)" in html, "the daily pass rate counts the rolled-up days"
    assert "0.0% (0 of 1 run)" in html, "the range stats count raw results only"
    assert "older days count only in the daily history" in html
    short = client.get(url + "?days=365").content.decode()
    assert re.findall(r"<title>(\d{4}-\d\d-\d\d: [^<]*)</title>", short) == titles, "?days=365 is ?range=365d"
    ninety = client.get(url + "?range=90d").content.decode()
    assert "Daily history, last 90 days" in ninety
    assert old not in ninety
    assert older not in ninety
    assert "older days count only" not in ninety


def test_history_daily_chart_covers_at_least_a_week(client, pair):
    site, test = pair
    add_rollup(site, test, 5, failures=2)
    login(client)
    url = reverse("kong:testresult_for_site", args=[site.slug, test.slug])
    html = client.get(url + "?range=24h").content.decode()
    assert "No runs in the last 24h" in html
    assert "Daily history, last 7 days" in html
    assert "48 runs, 2 failed" in html


def test_result_detail_highlights_the_failing_line(client, pair):
    site, test = pair
    first = add_result(site, test)
    result = add_result(site, test, "failed", reason="no match to 'Latest News'", failed_line=3, log="==> at line 3")
    last = add_result(site, test)
    login(client)
    html = client.get(reverse("kong:result_detail", args=[result.pk])).content.decode()
    row = re.search(r'<tr id="failed-line" class="k-failed-line">(.*?)</tr>', html, re.S)
    assert row, "the failing line is marked"
    assert ">3</th>" in row.group(1)
    assert "find &quot;Latest News&quot;" in row.group(1)
    assert "<mark>" in row.group(1)
    assert "failed here" in row.group(1)
    assert "==&gt; at line 3" in html
    assert reverse("kong:result_detail", args=[first.pk]) in html
    assert reverse("kong:result_detail", args=[last.pk]) in html


def test_site_detail_lists_every_test_with_a_sparkline(client, pair):
    site, test = pair
    other = make_test("search", name="Search", sites=[site])
    add_result(site, test, "failed", reason="down")
    add_result(site, test)
    add_result(site, other)
    login(client)
    html = client.get(reverse("kong:site_detail", args=[site.slug])).content.decode()
    assert "Front Page" in html
    assert "Search" in html
    assert html.count('class="k-sparkline"') == 2
    assert "2 runs, 1 failed" in html


def test_test_detail_compares_sites(client):
    kind = make_type("news")
    sites = [make_site(slug, name=slug.title(), type=kind) for slug in ("alpha", "bravo")]
    test = make_test("home", types=[kind])
    for site in sites:
        add_history(site, test, 10)
        add_result(site, test)
    login(client)
    html = client.get(reverse("kong:test_detail", args=[test.slug])).content.decode()
    assert html.count('class="k-chart-series"') == 2
    assert "<title>Alpha</title>" in html
    assert "<title>Bravo</title>" in html
    assert html.count('class="k-swatch"') == 2


def test_failed_lists_failures_newest_first(client, pair):
    site, test = pair
    add_result(site, test, "failed", reason="older", ago=timedelta(hours=2))
    add_result(site, test, "timeout", reason="newer", ago=timedelta(hours=1))
    add_result(site, test)
    login(client)
    html = client.get(reverse("kong:failed")).content.decode()
    assert html.index("newer") < html.index("older")
    assert html.count('<td class="k-reason">') == 2


def test_wallboard_shows_a_light_per_site(client):
    kind = make_type("news")
    ok, bad = make_site("ok", name="OK Site", type=kind), make_site("bad", name="Bad Site", type=kind)
    test = make_test("home", name="Home", types=[kind])
    add_result(ok, test)
    add_result(bad, test, "failed", reason="down")
    login(client)
    html = client.get(reverse("kong:dashboard")).content.decode()
    assert html.count('class="k-light ') == 2
    assert html.index("Bad Site") < html.index("OK Site")
    assert "FAILING: 1 of 1, Home" in html
    assert "1 of 2 sites failing" in html


def test_a_host_can_override_one_template(client, pair, settings, tmp_path):
    (tmp_path / "kong").mkdir()
    (tmp_path / "kong" / "site_detail_ljworld.html").write_text("custom page for {{ site.name }}")
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [str(tmp_path)]}]
    add_result(*pair)
    login(client)
    assert client.get(reverse("kong:site_detail", args=["ljworld"])).content == b"custom page for LJWorld"
    other = make_site("other", name="Other")
    assert b"custom page" not in client.get(reverse("kong:site_detail", args=[other.slug])).content


# -- feeds -------------------------------------------------------------------------


def test_metrics_in_prometheus_format(client, pair):
    site, test = pair
    add_result(site, test, "failed", duration=1500, reason="down")
    add_result(site, test, "failed", duration=1500, reason="down")
    login(client)
    response = client.get(reverse("kong:metrics"))
    text = response.content.decode()
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    labels = 'site="ljworld",test="front-page",server="",location=""'
    assert f"kong_check_up{{{labels}}} 0" in text
    assert f"kong_check_duration_seconds{{{labels}}} 1.500000" in text
    assert f"kong_check_consecutive_failures{{{labels}}} 2" in text
    assert 'kong_checks{status="failed"} 1' in text
    assert "# TYPE kong_check_up gauge" in text


def test_api_status_json(client, pair):
    add_result(*pair)
    login(client)
    data = json.loads(client.get(reverse("kong:api_status")).content)
    assert data["total"] == 1
    assert data["failing"] == 0
    assert data["ok"] is True
    assert data["counts"]["passed"] == 1
    assert data["checks"][0]["site"] == "ljworld"
    assert data["checks"][0]["status"] == "passed"


# -- query counts do not grow with the history or the fleet -----------------------------


def count_queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


@pytest.mark.parametrize("name", ["index", "dashboard", "metrics", "api_status"])
def test_live_pages_use_a_constant_number_of_queries(client, name, django_assert_max_num_queries):
    build_fleet(sites=3, tests=2, history=2, prefix="a")
    login(client)
    url = reverse(f"kong:{name}")
    small = count_queries(client, url)
    # Ten times the history, and a second fleet four times the size.
    build_fleet(sites=6, tests=4, history=20, prefix="b")
    assert Check.objects.count() == 30
    with django_assert_max_num_queries(10):
        assert client.get(url).status_code == 200
    assert 0 < count_queries(client, url) == small


def test_history_pages_use_a_constant_number_of_queries(client, pair):
    site, test = pair
    add_history(site, test, 5)
    result = add_result(site, test, "failed", reason="x", failed_line=1)
    login(client)
    urls = [
        reverse("kong:testresult_for_site", args=[site.slug, test.slug]),
        reverse("kong:result_detail", args=[result.pk]),
        reverse("kong:failed"),
        reverse("kong:test_detail", args=[test.slug]),
        reverse("kong:site_detail", args=[site.slug]),
    ]
    urls.append(urls[0] + "?range=365d")
    add_rollup(site, test, 300)
    small = [count_queries(client, url) for url in urls]
    add_history(site, test, 50)
    add_history(site, test, 40, every=timedelta(days=1))
    for days_ago in range(100, 300, 3):
        add_rollup(site, test, days_ago, failures=days_ago % 2)
    assert "Daily history" in client.get(urls[-1]).content.decode()
    assert [count_queries(client, url) for url in urls] == small
    assert all(0 < count <= 15 for count in small), small


def test_history_pages_read_results_through_an_index(client, pair):
    """EXPLAIN QUERY PLAN of every TestResult query the history pages make."""
    if connection.vendor != "sqlite":
        pytest.skip("reads SQLite's query plans")
    site, test = pair
    add_history(site, test, 30)
    result = add_result(site, test, "failed", reason="x", failed_line=1)
    login(client)
    urls = [
        reverse("kong:testresult_for_site", args=[site.slug, test.slug]) + "?page=2",
        reverse("kong:result_detail", args=[result.pk]),
        reverse("kong:failed"),
        reverse("kong:test_detail", args=[test.slug]),
        reverse("kong:site_detail", args=[site.slug]),
    ]
    plans = []
    for url in urls:
        with CaptureQueriesContext(connection) as queries:
            client.get(url)
        for query in list(queries.captured_queries):
            if '"kong_testresult"' in query["sql"] and query["sql"].startswith("SELECT"):
                with connection.cursor() as cursor:
                    cursor.execute(f"EXPLAIN QUERY PLAN {query['sql']}")
                    plans.append((url, " / ".join(row[-1] for row in cursor.fetchall())))
    assert len(plans) >= 8
    for url, plan in plans:
        steps = [step for step in plan.split(" / ") if "kong_testresult" in step]
        assert steps, (url, plan)
        for step in steps:  # a seek into an index, never a SCAN of the table or a whole index
            assert step.startswith("SEARCH kong_testresult USING"), (url, plan)



# -- locations ------------------------------------------------------------------


def test_the_dashboard_shows_and_filters_where_each_check_ran_from(client):
    """Inside the firewall passes, outside fails: the per-location rollup says so."""
    from kong import services
    from kong.engine.runner import Outcome
    from kong.models import Location

    inside = Location.objects.create(name="Inside", slug="inside")
    outside = Location.objects.create(name="Outside", slug="outside")
    site = make_site("intranet", name="Intranet")
    site.locations.set([inside, outside])
    test = make_test("front-page", sites=[site])
    services.sync_checks()
    checks = {check.location.slug: check for check in services.select_checks()}
    assert set(checks) == {"inside", "outside"}
    services.record(checks["inside"], Outcome("passed", 12.0))
    services.record(checks["outside"], Outcome("timeout", 10000.0, "timed out after 10 s"))
    login(client)

    matrix = client.get(reverse("kong:index")).context_data["matrix"]
    assert [(rollup.ref.slug, rollup.failing, rollup.total) for rollup in matrix.locations] == [
        ("outside", 1, 1),
        ("inside", 0, 1),
    ]
    assert client.get(reverse("kong:index"), {"location": "outside"}).context_data["matrix"].total == 1

    status = json.loads(client.get(reverse("kong:api_status"), {"location": "inside"}).content)
    assert [(check["location"], check["status"]) for check in status["checks"]] == [("inside", "passed")]
    metrics = client.get(reverse("kong:metrics")).content.decode()
    assert 'location="outside"' in metrics

    history = reverse("kong:testresult_for_site", args=[site.slug, test.slug])
    page = client.get(history, {"location": "outside"}).context_data["page"]
    assert [(result.location.slug, result.status) for result in page] == [("outside", "timeout")]
    assert b"Outside" in client.get(history).content
