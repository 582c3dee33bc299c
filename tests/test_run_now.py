"""Run-now (kong/run_now.py, the kong_run command and the pending page).

A check started from the dashboard runs in a ``kong_run`` process of its own,
under the three timeout layers, and the request answers at once. These tests
start real ``kong_run`` processes on the test database (KONG_SQLITE_PATH),
so their data must be committed (``transaction=True``). The tests that go
through ``live_server`` send real HTTP requests, which Django serves off the
main thread, where no alarm can interrupt a check: the place where running a
check inside the request went wrong.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import resolve, reverse
from django.utils import timezone

from kong import run_now, services
from kong.conf import kong_settings
from kong.engine.runner import Outcome
from kong.models import Check, Test, TestResult
from tests.factories import make_site, make_test, make_user
from tests.fleet import FakeSite, child_pids, trickle

pytestmark = pytest.mark.django_db(transaction=True)

ON_POSTGRES = os.environ.get("KONG_TEST_DATABASE") == "postgres"
HANG_TIMEOUT = 1  # Test.timeout of the checks that hang: the soft alarm ends them
# How long a test waits for a run before it gives up: far past every timeout
# layer of the slowest check here, so only a run that never ends reaches it.
PATIENCE = 10 * (HANG_TIMEOUT + float(kong_settings.KILL_GRACE) + float(kong_settings.REQUEST_TIMEOUT))


@pytest.fixture(autouse=True)
def shared_database(monkeypatch) -> Iterator[None]:
    """kong_run processes open this test's database, and are gone before
    it is flushed."""
    name = str(connection.settings_dict["NAME"])
    monkeypatch.setenv("PGDATABASE" if ON_POSTGRES else "KONG_SQLITE_PATH", name)
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    before = set(child_pids())
    yield
    deadline = time.monotonic() + PATIENCE
    while set(child_pids()) - before and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture
def gate(web: FakeSite) -> Iterator[threading.Event]:
    """``web``'s ``/hang`` accepts a request and answers only once the gate is
    set: a site that hangs until the test lets it go (or, as a last resort,
    until PATIENCE runs out, so that a broken run-now cannot hang the suite)."""
    opened = threading.Event()
    web.route("/hang", on_request=lambda request: opened.wait(PATIENCE))
    yield opened
    opened.set()


def hanging_check(web: FakeSite, slug: str = "ljworld", *, body: str = "go {{ site.url }}/hang\ncode 200") -> Check:
    site = make_site(slug, servername=web.host)
    make_test(f"hang-{slug}", body=body, sites=[site], timeout=HANG_TIMEOUT)
    services.sync_checks()
    return Check.objects.select_related("test", "site").get(site=site)


def operator() -> User:
    return make_user(run=True)


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def run_url(check: Check) -> str:
    return reverse("kong:run_test_on_site", args=[check.site.slug, check.test.slug])


def finished(check: Check, *, seen: int | None = None) -> TestResult:
    """Wait until ``check``'s run is over: its claim given up and a result
    other than ``seen`` recorded."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        state = Check.objects.select_related("last_result").get(pk=check.pk)
        if not state.claim_token and state.last_result_id not in (None, seen):
            assert state.last_result is not None
            return state.last_result
        time.sleep(0.05)
    pytest.fail(f"{check} was not recorded: claim {state.claim_token!r} until {state.claimed_until}")


class Browser:
    """An operator's browser on the live server: real HTTP, a session
    cookie, and the CSRF token of the history page's run-now form."""

    def __init__(self, live_server: object, user: User) -> None:
        self.base = str(live_server)
        self.cookies = {"sessionid": logged_in(user).cookies["sessionid"].value}

    def run_now(self, check: Check) -> httpx.Response:
        history = reverse("kong:testresult_for_site", args=[check.site.slug, check.test.slug])
        page = httpx.get(self.base + history, cookies=self.cookies)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token, "the history page offers a run-now form"
        cookies = {**self.cookies, "csrftoken": page.cookies["csrftoken"]}
        data = {"csrfmiddlewaretoken": token.group(1)}
        return httpx.post(self.base + run_url(check), data=data, cookies=cookies, timeout=None)


def assert_pending_page(response: httpx.Response) -> None:
    assert response.status_code == 302, response.text
    assert resolve(response.headers["location"].split("?")[0]).url_name == "run_pending"


# -- run-now never runs a check inside the request ---------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "go {{ site.url }}/hang\ncode 200",
        "timeout 0\ngo {{ site.url }}/hang\ncode 200",  # twill's own request timeout switched off
        "go {{ site.url }}/trickle\ncode 200",  # every read arrives within the request timeout
    ],
    ids=["hang", "hang-without-request-timeout", "trickle"],
)
def test_run_now_on_a_hanging_site_answers_at_once_and_the_check_times_out(live_server, web, gate, body):
    web.route("/trickle", respond=trickle(0.2, total=int(PATIENCE / 0.2)))  # ends, at last, after PATIENCE
    check = hanging_check(web, body=body)
    response = Browser(live_server, operator()).run_now(check)
    # The answer came while the check was still in flight.
    assert not TestResult.objects.exists()
    assert Check.objects.get().claim_token
    assert_pending_page(response)
    result = finished(check)
    assert result.status == "timeout", result.content
    assert result.reason.startswith(f"timed out after {HANG_TIMEOUT} s")
    assert result.duration < float(kong_settings.REQUEST_TIMEOUT) * 1000, "the alarm ended it, not httpx"
    assert sum(web.hits.values()) == 1


def test_a_sleep_longer_than_the_timeout_times_out(live_server, web):
    site = make_site("ljworld", servername=web.host)
    make_test("slow", body="go {{ site.url }}\nsleep 3", sites=[site], timeout=HANG_TIMEOUT)
    services.sync_checks()
    check = Check.objects.select_related("test", "site").get()
    response = Browser(live_server, operator()).run_now(check)
    result = finished(check)
    assert result.status == "timeout", result.content
    assert result.duration < 3000, "interrupted, not waited out"
    assert result.failed_line == 2
    assert_pending_page(response)


def test_two_run_nows_at_once_do_not_wait_for_each_other(live_server, web, gate):
    checks = [hanging_check(web, slug) for slug in ("ljworld", "lawrence")]
    for slug in ("ljworld", "lawrence"):  # long enough that only the gate ends them
        Test.objects.filter(slug=f"hang-{slug}").update(timeout=int(PATIENCE))
    browser = Browser(live_server, operator())
    responses: dict[int, httpx.Response] = {}

    def press(check: Check) -> None:
        responses[check.pk] = browser.run_now(check)

    threads = [threading.Thread(target=press, args=(check,)) for check in checks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Both answered while both sites still hung: neither request ran its check.
    assert not TestResult.objects.exists()
    tokens = set(Check.objects.values_list("claim_token", flat=True))
    assert len(tokens) == 2
    assert "" not in tokens
    for response in responses.values():
        assert_pending_page(response)
    gate.set()
    assert [finished(check).status for check in checks] == ["passed", "passed"]


def test_with_safe_mode_off_a_run_line_executes_outside_the_web_server(web, settings, tmp_path, monkeypatch):
    # override_settings does not reach the kong_run process: it loads a
    # settings module, from this process's import path.
    (tmp_path / "kong_unsafe_settings.py").write_text("from tests.settings import *\nKONG_SAFE_MODE = False\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "kong_unsafe_settings")
    settings.KONG_SAFE_MODE = False
    site = make_site("ljworld", servername=web.host)
    body = "go {{ site.url }}\nrun \"import os, twill; twill.log.info('kong-pid=%d', os.getpid())\""
    make_test("pid", body=body, sites=[site])
    services.sync_checks()
    check = Check.objects.select_related("test", "site").get()
    response = logged_in(operator()).post(run_url(check))
    result = finished(check)
    assert result.status == "passed", result.content
    found = re.search(r"kong-pid=(\d+)", result.content)
    assert found, result.content
    assert int(found.group(1)) != os.getpid(), "the script ran inside the web server"
    assert resolve(response["Location"]).url_name == "run_pending"


# -- the pending page ----------------------------------------------------------------


def test_the_pending_page_shows_the_run_then_redirects_to_its_result(web, gate):
    check = hanging_check(web)
    Test.objects.update(timeout=int(PATIENCE))
    client = logged_in(operator())
    response = client.post(run_url(check))
    pending = response["Location"]
    assert resolve(pending).url_name == "run_pending"
    page = client.get(pending)
    assert page.status_code == 200
    assert page["Cache-Control"] == "no-store"
    html = page.content.decode()
    assert "Started Hang Ljworld on Ljworld." in html
    assert "running…" in html
    assert '<meta http-equiv="refresh" content="1">' in html
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "no inline script (a strict CSP is coming)"
    assert " style=" not in html
    assert client.get(pending).status_code == 200, "still running while the site hangs"
    gate.set()
    result = finished(check)
    response = client.get(pending)
    assert response.status_code == 302
    assert response["Location"] == reverse("kong:result_detail", args=[result.pk])
    html = client.get(response["Location"]).content.decode()
    assert "Ran Hang Ljworld on Ljworld: passed." in html


def test_a_check_another_run_holds_is_not_started_again(web):
    site = make_site("ljworld", servername=web.host)
    make_test(sites=[site])
    services.sync_checks()
    check = Check.objects.select_related("test", "site").get()
    # The scheduler is running it.
    Check.objects.update(claim_token="scheduler", claimed_until=timezone.now() + timedelta(minutes=5))
    before = set(child_pids())
    client = logged_in(operator())
    response = client.post(run_url(check))
    assert set(child_pids()) == before, "no kong_run was started"
    assert not web.hits, "run-now did not run the check itself either"
    assert not TestResult.objects.exists()
    assert Check.objects.get().claim_token == "scheduler"
    pending = response["Location"]
    html = client.get(pending).content.decode()
    assert "Front Page on Ljworld is already running; this page follows that run." in html
    assert "running…" in html
    # The scheduler's run ends; the page follows it to its result.
    result = services.record(check, Outcome("passed", 12.0), token="scheduler")
    assert result is not None
    assert client.get(pending)["Location"] == reverse("kong:result_detail", args=[result.pk])
    assert TestResult.objects.count() == 1


def test_a_run_that_cannot_start_releases_its_claim_and_says_why(web, tmp_path, monkeypatch):
    site = make_site("ljworld", servername=web.host)
    test = make_test(sites=[site])
    services.sync_checks()
    check = Check.objects.select_related("test", "site").get()
    monkeypatch.setattr("sys.executable", str(tmp_path / "no-python"))
    client = logged_in(operator())
    response = client.post(run_url(check))
    assert response["Location"] == reverse("kong:testresult_for_site", args=[site.slug, test.slug])
    assert Check.objects.filter(claim_token="").count() == 1, "the claim was given back"
    html = client.get(response["Location"]).content.decode()
    assert "Could not start Front Page on Ljworld:" in html
    assert "no-python" in html


def test_a_run_that_ended_without_a_result_says_so(client, web):
    site = make_site("ljworld", servername=web.host)
    make_test(sites=[site])
    services.sync_checks()
    check = Check.objects.get()
    # Claimed by a kong_run that died: its lease ran out, nothing was recorded.
    Check.objects.update(claim_token="dead", claimed_until=timezone.now() - timedelta(seconds=1))
    ticket = run_now.ticket([run_now.Entry(check.pk, "dead", None)])
    client.force_login(operator())
    page = client.get(reverse("kong:run_pending", args=[ticket]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "The run ended without recording a result" in html
    assert 'http-equiv="refresh"' not in html
    assert "Run now" in html, "it offers to run the check again"


def test_a_forged_ticket_is_404(client):
    client.force_login(operator())
    forged = run_now.ticket([run_now.Entry(1, "x", None)])[:-2] + "xx"
    assert client.get(reverse("kong:run_pending", args=[forged])).status_code == 404
    assert client.get(reverse("kong:run_pending", args=["nonsense"])).status_code == 404


def test_the_pending_page_needs_login(client):
    url = reverse("kong:run_pending", args=[run_now.ticket([])])
    assert client.get(url)["Location"].startswith("/admin/login/")


# -- kong_run ---------------------------------------------------------------------------


def test_kong_run_runs_only_the_checks_its_token_still_holds(web):
    for slug in ("ljworld", "lawrence"):
        make_test(f"front-{slug}", sites=[make_site(slug, servername=web.host)])
    services.sync_checks()
    mine, other = (Check.objects.get(site__slug=slug) for slug in ("ljworld", "lawrence"))
    assert services.claim_checks([mine.pk], token="mine") == [mine.pk]
    Check.objects.filter(pk=other.pk).update(claim_token="other", claimed_until=timezone.now() + timedelta(minutes=5))
    call_command("kong_run", "--token", "mine", str(mine.pk), str(other.pk))
    assert list(TestResult.objects.values_list("site__slug", "status")) == [("ljworld", "passed")]
    states = dict(Check.objects.values_list("pk", "claim_token"))
    assert states == {mine.pk: "", other.pk: "other"}
