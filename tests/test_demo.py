"""The demo: its fake sites, its fleet fixture, and ``run_demo.py --no-serve``.

Everything runs for real: the demo sites listen on their fixed ports on
127.0.0.1, check_sites runs its worker pool against them, and run_demo.py
runs in a subprocess with its own SQLite file.
"""

from __future__ import annotations

import http.cookiejar
import importlib.util
import os
import re
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from django.core.management import call_command

from kong.engine.scripts import compile_script
from kong.masking import MASK
from kong.models import Check, Site, Test, TestResult

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"
FIXTURE = EXAMPLE / "fixtures" / "demo_fleet.json"


def load_demo_sites() -> ModuleType:
    """example_project/ is not a package: load demo_sites.py by its path."""
    spec = importlib.util.spec_from_file_location("demo_sites", EXAMPLE / "demo_sites.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("demo_sites", module)
    spec.loader.exec_module(module)
    return module


demo_sites = load_demo_sites()
BROKEN = [site for site in demo_sites.SITES if site.broken]


@pytest.fixture
def sites() -> Iterator[Any]:
    """The demo sites on their fixed ports (reusing a running demo's, if any)."""
    if all(demo_sites.is_serving(site) for site in demo_sites.SITES):
        yield None
        return
    fleet = demo_sites.start()
    yield fleet
    fleet.stop()


@pytest.fixture
def demo_fleet(db: None) -> None:
    call_command("loaddata", str(FIXTURE), verbosity=0)


def fetch(opener: urllib.request.OpenerDirector, url: str, data: dict[str, str] | None = None) -> tuple[int, str]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with opener.open(url, body, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def browser() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))


# -- the fake sites -------------------------------------------------------------


def test_a_demo_site_has_search_login_and_articles(sites: Any) -> None:
    site = next(site for site in demo_sites.SITES if not site.broken and site.kind == "news")
    client = browser()
    status, front = fetch(client, f"{site.url}/")
    assert status == 200
    assert "Latest News" in front
    assert f"<title>{site.name}</title>" in front
    slug, title = site.items[0]
    status, article = fetch(client, f"{site.url}/news/{slug}/")
    assert status == 200
    assert f"<h1>{title}</h1>" in article


def test_search_echoes_the_query_escaped(sites: Any) -> None:
    site = demo_sites.SITES[0]
    query = urllib.parse.urlencode({"q": '<script>alert("x")</script>'})
    status, page = fetch(browser(), f"{site.url}/search/?{query}")
    assert status == 200
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "<script>" not in page
    assert "No results." in page


def test_login_sets_a_session_and_rejects_a_wrong_password(sites: Any) -> None:
    site = demo_sites.SITES[0]
    client = browser()
    status, form = fetch(client, f"{site.url}/login/")
    match = re.search(r'name="csrfmiddlewaretoken" value="(\w+)"', form)
    assert match is not None
    token = match.group(1)
    fields = {"csrfmiddlewaretoken": token, "username": demo_sites.USERNAME}
    status, page = fetch(client, f"{site.url}/login/", {**fields, "password": "wrong"})
    assert status == 200
    assert "Please enter a correct username and password" in page
    status, page = fetch(client, f"{site.url}/login/", {**fields, "password": site.password})
    assert status == 200
    assert f"Welcome, {demo_sites.USERNAME}" in page
    status, page = fetch(browser(), f"{site.url}/login/", {**fields, "password": site.password})
    assert status == 403  # no CSRF cookie in a fresh browser


def test_exactly_one_site_is_broken(sites: Any) -> None:
    [broken] = BROKEN
    status, page = fetch(browser(), f"{broken.url}/")
    assert status == 500
    assert "Server Error (500)" in page


# -- the fixture --------------------------------------------------------------------


def test_the_fixture_matches_the_demo_sites(demo_fleet: None) -> None:
    ports = {site.slug: site.port for site in demo_sites.SITES}
    assert {site.slug: site.servername for site in Site.objects.all()} == {
        slug: f"127.0.0.1:{port}" for slug, port in ports.items()
    }
    for site in Site.objects.all():
        assert site.variables["password"] in site.secret_values()
    assert Test.objects.count() == 4


def test_every_script_renders_and_passes_safe_mode_for_every_site(demo_fleet: None) -> None:
    from kong import services

    services.sync_checks()
    assert Check.objects.count() == 22
    for check in Check.objects.select_related("test", "site"):
        used = set(re.findall(r"{{\s*(\w+)", check.test.body)) - {"site", "test", "server"}
        assert used <= check.site.variables.keys(), check.label
        compile_script(check.test, check.site)  # raises ScriptError if not


# -- check_sites against the demo ---------------------------------------------------------


def test_check_sites_fails_only_the_broken_site(sites: Any, demo_fleet: None) -> None:
    out = StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("check_sites", verbosity=2, stdout=out)
    assert exit_.value.code == 2
    assert "22 checks: 18 passed, 4 failed" in out.getvalue()

    [broken] = BROKEN
    failed = TestResult.objects.filter(site__slug=broken.slug)
    assert failed.count() == 4
    for result in failed:
        assert result.status == "failed"
        assert result.reason == "code 500 != 200 at line 2"
        assert result.failed_line == 2
    others = Check.objects.exclude(site__slug=broken.slug)
    assert others.count() == 18
    assert set(others.values_list("status", flat=True)) == {"passed"}


def test_stored_login_results_never_hold_the_password(sites: Any, demo_fleet: None) -> None:
    with pytest.raises(SystemExit):
        call_command("check_sites", "--test", "login", stdout=StringIO())
    results = TestResult.objects.filter(test__slug="login").select_related("site")
    assert results.count() == 6
    for result in results:
        password = result.site.variables["password"]
        for text in (result.content, result.script, result.reason):
            assert password not in text
        if result.succeeded:
            assert f"fv login password {MASK}" in result.content
        assert f'fv login password "{MASK}"' in result.script


# -- run_demo.py --------------------------------------------------------------------------------


def run_demo(database: Path) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if name not in ("DJANGO_SETTINGS_MODULE", "KONG_SQLITE_PATH")}
    env["KONG_DEMO_DB"] = str(database)
    return subprocess.run(
        [sys.executable, str(EXAMPLE / "run_demo.py"), "--no-serve"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def count(database: Path, sql: str) -> int:
    with sqlite3.connect(database) as connection:
        return int(connection.execute(sql).fetchone()[0])


def test_run_demo_checks_the_fleet_and_can_run_again(tmp_path: Path) -> None:
    database = tmp_path / "demo.sqlite3"
    first = run_demo(database)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "22 checks: 18 passed, 4 failed" in first.stdout
    assert "FAILED: KUSports / Front page" in first.stdout  # the alert mail
    for site in demo_sites.SITES:
        assert site.password not in first.stdout
    assert count(database, "SELECT COUNT(*) FROM kong_testresult") == 22
    assert count(database, "SELECT COUNT(*) FROM auth_user WHERE username = 'admin' AND is_superuser") == 1

    again = run_demo(database)  # loading the fleet again updates the same rows
    assert again.returncode == 0, again.stdout + again.stderr
    assert count(database, "SELECT COUNT(*) FROM kong_site") == 6
    assert count(database, "SELECT COUNT(*) FROM kong_testresult") == 44
