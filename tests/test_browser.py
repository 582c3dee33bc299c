"""The dashboard in a real browser: Playwright (from PyPI) driving Debian's
Chromium against pytest-django's live server, with the checked sites served
by FakeSite on 127.0.0.1. Also takes the README's screenshots: into
test-results/screenshots/ by default, into docs/ with `make screenshots`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from playwright.sync_api import Browser, Page, sync_playwright

from kong.models import Check, TestResult
from tests.factories import make_server, make_site, make_test, make_type, make_user
from tests.fleet import FakeSite
from tests.test_views import add_history

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parent.parent
DOCS = Path(os.environ.get("KONG_SCREENSHOT_DIR") or REPO / "test-results" / "screenshots")
DOCS.mkdir(parents=True, exist_ok=True)
# Generous waits for a loaded CI machine; nothing here measures speed.
WAIT_MS = 60_000
PAYLOAD = '<script>window.kongPwned=1;alert(1)</script><img src="x" onerror="window.kongPwned=2;alert(2)">'


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Playwright's sync API keeps an event loop in this thread, which makes
    # Django refuse ORM calls from the test body unless told it is fine.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def dialogs() -> list[str]:
    """Messages of every alert/confirm a page opened (there should be none)."""
    return []


@pytest.fixture
def page(browser: Browser, live_server: object, dialogs: list[str]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, base_url=str(live_server))
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    context.close()


@pytest.fixture
def sites() -> Iterator[tuple[FakeSite, FakeSite]]:
    """Two real web servers: a healthy one and a broken one."""
    healthy, broken = FakeSite().start(), FakeSite().start()
    broken.route("/", body="<html><head><title>Home</title></head><body>Database error</body></html>")
    yield healthy, broken
    healthy.stop()
    broken.stop()


def operator(*, can_run: bool = True) -> User:
    return make_user(password="kong-pass", run=can_run, is_staff=True)


def log_in(page: Page, next_url: str = "/kong/") -> None:
    page.goto(f"/admin/login/?next={next_url}")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "kong-pass")
    page.click("input[type=submit]")
    page.wait_for_url(f"**{next_url}")


def check_sites(*args: str) -> int:
    """Run check_sites in this process (inline); returns its exit status."""
    try:
        call_command("check_sites", "--workers", "0", "--quiet", *args)
    except SystemExit as exit:
        return int(exit.code or 0)
    return 0


def demo_fleet(healthy: FakeSite, broken: FakeSite) -> None:
    """A small fleet like `make demo`: two types, two servers, one broken site."""
    news, blogs = make_type("news", name="News"), make_type("blogs", name="Blogs")
    web1, web2 = make_server("web1", name="web1"), make_server("web2", name="web2")
    names = ["Lawrence Journal-World", "KUsports", "Lawrence.com", "Douglas County", "Town Talk", "Rural Blog"]
    for index, name in enumerate(names):
        make_site(
            name.lower().replace(" ", "-").replace(".", "-"),
            name=name,
            servername=healthy.host,
            type=news if index < 4 else blogs,
            servers=[web1 if index % 2 else web2],
        )
    make_site("broken-news", name="Broken News", servername=broken.host, type=news, servers=[web1])
    make_test("front-page", name="Front page", body='go {{ site.url }}\ncode 200\nfind "Latest News"', types=[news, blogs])
    make_test("title", name="Title", body="go {{ site.url }}\ntitle Home", types=[news, blogs])
    make_test("robots", name="Not found page", body="go {{ site.url }}/missing\ncode 404", types=[news])
    assert check_sites() == 2
    for check in Check.objects.select_related("site", "test"):
        add_history(check.site, check.test, 40, every=timedelta(minutes=30), base=60.0 + 35 * (check.site_id % 7))


def test_browse_filter_open_failure_and_run_now(page, sites, monkeypatch):
    monkeypatch.setenv("KONG_SQLITE_PATH", str(connection.settings_dict["NAME"]))  # run-now's kong_run process
    healthy, broken = sites
    demo_fleet(healthy, broken)
    operator()

    log_in(page)
    matrix = page.locator("table.k-matrix")
    first_row = matrix.locator("tbody tr").first
    assert "Broken News" in first_row.locator("th").inner_text(), "the failing site comes first"
    assert "failed" in first_row.locator("td.k-failed").first.inner_text()
    assert "1 of 19 checks failing" in page.locator(".k-summary").inner_text()
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "dashboard-index.png"), full_page=True)
    page.goto("/kong/dashboard/")
    assert page.locator("li.k-light").count() == 7
    assert "FAILING" in page.locator("li.k-light").first.inner_text()
    page.screenshot(path=str(DOCS / "dashboard-wallboard.png"))
    page.goto("/kong/")

    # Filter by Type: only the blogs are left.
    page.select_option("select[name=type]", "blogs")
    page.click("form.k-filters button[type=submit]")
    page.wait_for_url("**type=blogs**")
    rows = matrix.locator("tbody th[scope=row]").all_inner_texts()
    assert [row.split()[0] for row in rows] == ["Rural", "Town"]
    page.click("a.k-clear")

    # A failing cell opens that pair's history.
    page.locator("table.k-matrix td.k-failed a").first.click()
    page.wait_for_url("**/site/broken-news/front-page/")
    assert page.locator("h1").inner_text() == "Front page on Broken News"
    assert page.locator("svg.k-chart").count() == 1

    # The newest result shows the script with its failing line marked.
    page.locator("table.k-table tbody tr").first.locator("a").first.click()
    page.wait_for_url("**/result/**")
    failing_line = page.locator("#failed-line")
    assert failing_line.is_visible()
    assert 'find "Latest News"' in failing_line.inner_text()
    assert failing_line.locator("th").inner_text() == "3"
    assert "no match to 'Latest News'" in page.locator(".k-facts").inner_text()
    page.screenshot(path=str(DOCS / "result-detail.png"), full_page=True)

    # Run now: fix the site first, press the button, land on the new result.
    broken.route("/", body="<html><head><title>Home</title></head><body>Latest News</body></html>")
    before = TestResult.objects.filter(site__slug="broken-news", test__slug="front-page").count()
    old_url = page.url
    page.click("form.k-run button")
    page.wait_for_url(lambda url: url != old_url and "/result/" in url)
    assert TestResult.objects.filter(site__slug="broken-news", test__slug="front-page").count() == before + 1
    newest = TestResult.objects.filter(site__slug="broken-news", test__slug="front-page").first()
    assert page.url.endswith(reverse("kong:result_detail", args=[newest.pk]))
    assert "Ran Front page on Broken News: passed." in page.locator(".k-messages").inner_text()
    assert "passed" in page.locator("h1").inner_text()


def test_in_place_refresh_picks_up_a_result_from_another_process(page, sites, settings):
    settings.KONG_DASHBOARD_REFRESH = 1
    healthy, _ = sites
    site = make_site("ljworld", name="LJWorld", servername=healthy.host)
    make_test("front-page", name="Front page", body='go {{ site.url }}\ncode 200\nfind "Latest News"', sites=[site])
    assert check_sites() == 0
    operator(can_run=False)

    log_in(page)
    assert page.locator("table.k-matrix td.k-passed").count() == 1
    page.evaluate("window.kongSamePage = true")

    # Break the site, then run check_sites in another process on the same database.
    healthy.route("/", status=500, body="<html><body>Server Error</body></html>")
    env = {**os.environ, "KONG_SQLITE_PATH": str(connection.settings_dict["NAME"]), "DJANGO_SETTINGS_MODULE": "tests.settings"}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    finished = subprocess.run(
        [sys.executable, "-m", "django", "check_sites", "--settings=tests.settings", "--workers", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert finished.returncode == 2, finished.stdout + finished.stderr
    assert TestResult.objects.filter(status="failed").count() == 1

    page.wait_for_selector("table.k-matrix td.k-failed")
    assert page.evaluate("window.kongSamePage") is True, "the page was updated in place, not reloaded"
    assert "1 of 1 checks failing" in page.locator(".k-summary").inner_text()


def test_hostile_page_content_never_executes(page, sites, dialogs):
    healthy, _ = sites
    healthy.route("/", body=f"<html><head><title>Home</title></head><body>{PAYLOAD}</body></html>")
    site = make_site("hostile", name=f"Hostile {PAYLOAD}", servername=healthy.host)
    make_test("front-page", name="Front page", body='go {{ site.url }}\nshow\nfind "Latest News"', sites=[site])
    assert check_sites() == 2
    result = TestResult.objects.get()
    assert PAYLOAD in result.content, "the captured log holds the hostile page"
    operator()

    log_in(page)
    refused: list[str] = []  # what the Content-Security-Policy blocked on Kong's own pages
    page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None)
    urls = [
        "/kong/",
        "/kong/dashboard/",
        "/kong/failed/",
        reverse("kong:site_detail", args=["hostile"]),
        reverse("kong:testresult_for_site", args=["hostile", "front-page"]),
        reverse("kong:result_detail", args=[result.pk]),
        reverse("kong:test_detail", args=["front-page"]),
    ]
    for url in urls:
        page.goto(url)
        page.wait_for_load_state("load")
        assert page.evaluate("window.kongPwned") is None, url
        assert page.locator("img[src=x]").count() == 0, url
    assert dialogs == []
    assert refused == []  # Kong's pages need no inline script or style, so the strict policy blocks nothing of theirs
    # The payload is shown as text, exactly as the site served it.
    page.goto(reverse("kong:result_detail", args=[result.pk]))
    assert PAYLOAD in page.locator("pre.k-log").inner_text()
    assert PAYLOAD in page.locator("h1").inner_text()
