"""kong.services: which checks exist, and running and recording them."""

from __future__ import annotations

import os
import signal
import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from kong import services
from kong.masking import MASK
from kong.models import Check, TestResult
from tests.factories import make_server, make_site, make_test, make_type
from tests.fleet import child_pids, closed_port

pytestmark = pytest.mark.django_db


def keys() -> set[tuple[str, str, str | None]]:
    services.sync_checks()
    return {
        (check.test.slug, check.site.slug, check.server.slug if check.server else None)
        for check in Check.objects.select_related("test", "site", "server")
    }


# -- which checks exist ----------------------------------------------------------


def test_a_test_applies_to_its_sites_and_every_live_site_of_its_types():
    news = make_type("news")
    ljworld = make_site("ljworld", type=news)
    kusports = make_site("kusports", type=news)
    make_site("archive", type=news, is_live=False)
    blog = make_site("blog")
    make_site("unrelated")
    front = make_test("front-page", sites=[blog], types=[news])
    assert keys() == {("front-page", "ljworld", None), ("front-page", "kusports", None), ("front-page", "blog", None)}
    assert set(front.applicable_sites().values_list("slug", flat=True)) == {"ljworld", "kusports", "blog"}
    assert kusports in front.applicable_sites()
    assert ljworld.checks.count() == 1


def test_non_live_sites_are_excluded_even_when_listed_explicitly():
    site = make_site("staging", is_live=False)
    test = make_test(sites=[site])
    assert keys() == set()
    assert not test.applicable_sites().exists()


def test_inactive_tests_are_excluded():
    site = make_site()
    make_test("retired", sites=[site], is_active=False)
    make_test("current", sites=[site])
    assert keys() == {("current", "ljworld", None)}


def test_a_site_in_both_lists_gets_one_check():
    news = make_type("news")
    site = make_site(type=news)
    make_test(sites=[site], types=[news])
    assert keys() == {("front-page", "ljworld", None)}


def test_per_server_tests_fan_out_over_active_servers():
    web1, web2 = make_server("web1"), make_server("web2")
    retired = make_server("web3", is_active=False)
    site = make_site("ljworld", servers=[web1, web2, retired])
    lonely = make_site("lonely")
    make_test("each-server", sites=[site, lonely], per_server=True)
    make_test("once", sites=[site])
    assert keys() == {
        ("each-server", "ljworld", "web1"),
        ("each-server", "ljworld", "web2"),
        ("each-server", "lonely", None),  # no servers: checked once, directly
        ("once", "ljworld", None),
    }


def test_sync_checks_retires_checks_that_no_longer_apply_and_keeps_the_rest():
    news = make_type("news")
    a, b = make_site("a", type=news), make_site("b")
    test = make_test(sites=[b], types=[news])
    services.sync_checks()
    kept = Check.objects.get(site=a)
    assert Check.objects.count() == 2

    test.sites.remove(b)
    services.sync_checks()
    assert list(Check.objects.active().values_list("site__slug", flat=True)) == ["a"]
    assert Check.objects.active().get().pk == kept.pk  # state survives a sync

    a.is_live = False
    a.save()
    services.sync_checks()
    assert not Check.objects.active().exists()
    assert Check.objects.count() == 2  # retired, not deleted


@override_settings(KONG_MAIL_MANAGERS=True)
@pytest.mark.django_db(transaction=True)
def test_a_retired_check_keeps_its_streak_and_does_not_alert_again_when_revived(web, mailoutbox):
    """Regression: sync_checks deleted the rows, so switching a test off and
    on again lost the mute and the failure streak and mailed a new alert."""
    web.route("/", status=500)
    site = make_site("a", servername=web.host)
    test = make_test(sites=[site])
    services.run_checks(services.select_checks(), workers=0)
    assert len(mailoutbox) == 1
    check = Check.objects.get()

    test.is_active = False
    test.save()
    services.sync_checks()
    assert not Check.objects.get(pk=check.pk).is_active

    test.is_active = True
    test.save()
    services.run_checks(services.select_checks(), workers=0)
    revived = Check.objects.get()
    assert revived.pk == check.pk
    assert revived.is_active
    assert revived.consecutive_failures == 2
    assert len(mailoutbox) == 1  # still the same outage: no second alert


# -- selecting -------------------------------------------------------------------


def fleet():
    news, sports = make_type("news"), make_type("sports")
    web1, web2 = make_server("web1"), make_server("web2")
    make_site("ljworld", type=news, servers=[web1])
    make_site("kusports", type=sports, servers=[web2])
    make_site("lawrence", type=news, servers=[web2])
    make_test("front-page", types=[news, sports])
    make_test("search", types=[news])


def labels(checks) -> list[str]:
    return sorted(check.label for check in checks)


def test_no_selector_selects_every_check():
    fleet()
    assert len(labels(services.select_checks())) == 5


def test_selectors_combine_with_and():
    fleet()
    assert labels(services.select_checks(tests=["search"])) == ["lawrence/search", "ljworld/search"]
    assert labels(services.select_checks(tests=["search"], sites=["ljworld"])) == ["ljworld/search"]
    assert labels(services.select_checks(types=["sports"])) == ["kusports/front-page"]
    assert labels(services.select_checks(servers=["web2"])) == [
        "kusports/front-page",
        "lawrence/front-page",
        "lawrence/search",
    ]
    assert labels(services.select_checks(servers=["web2"], tests=["search"])) == ["lawrence/search"]


def test_unknown_slugs_are_refused_by_name():
    fleet()
    for selector, noun in (("tests", "test"), ("sites", "site"), ("types", "type"), ("servers", "server")):
        with pytest.raises(services.KongError, match=f"unknown {noun} 'nope'"):
            services.select_checks(**{selector: ["nope"]})


def test_selectors_that_match_nothing_say_why():
    fleet()
    make_site("closed", is_live=False)
    make_test("old", is_active=False)
    with pytest.raises(services.KongError, match="site 'closed' is not live"):
        services.select_checks(sites=["closed"])
    with pytest.raises(services.KongError, match="test 'old' is not active"):
        services.select_checks(tests=["old"])
    with pytest.raises(services.KongError, match="no checks match"):
        services.select_checks(tests=["search"], types=["sports"])


# -- running and recording --------------------------------------------------------


def test_every_check_writes_one_result_and_updates_its_state(web):
    web.route("/gone", status=404)
    ok = make_site("ok", web.host)
    gone = make_site("gone", web.url("/gone"))
    make_test(body="go {{ site.url }}\ncode 200", sites=[ok, gone])
    before = timezone.now()
    report = services.run_checks(services.select_checks(), workers=0)

    assert [(item.site, item.status) for item in report.results] == [("gone", "failed"), ("ok", "passed")]
    assert TestResult.objects.count() == 2
    for check in Check.objects.select_related("last_result"):
        result = TestResult.objects.get(site=check.site)
        assert check.last_result == result
        assert check.status == result.status
        assert check.last_run_at == result.run_date
        assert check.next_due_at > before
        assert check.claimed_until is None
    failed = TestResult.objects.get(site=gone)
    assert (failed.succeeded, failed.failed_line, failed.reason) == (False, 2, "code 404 != 200 at line 2")
    assert failed.script == f"go {web.url('/gone')}\ncode 200"
    assert "FAILED: code 404 != 200 at line 2" in failed.content
    assert Check.objects.get(site=gone).consecutive_failures == 1
    assert report.exit_code == 2


def test_results_are_reported_in_check_order_whatever_the_pool_finishes_first(web):
    web.route("/slow", delay=0.3)
    slow = make_site("aaa-slow", web.url("/slow"))
    fast = make_site("zzz-fast", web.host)
    make_test(sites=[slow, fast])
    report = services.run_checks(services.select_checks(), workers=2)
    assert [item.site for item in report.results] == ["aaa-slow", "zzz-fast"]
    assert report.exit_code == 0


def test_an_invalid_script_is_recorded_as_an_error_never_skipped(web):
    site = make_site(servername=web.host)
    make_test("evil", body='go {{ site.url }}\nrun "import os"', sites=[site])
    make_test("broken-template", body="{% if %}go {{ site.url }}", sites=[site])
    report = services.run_checks(services.select_checks(), workers=0)
    assert {item.test: item.status for item in report.results} == {"evil": "error", "broken-template": "error"}
    evil = TestResult.objects.get(test__slug="evil")
    assert evil.failed_line == 2
    assert evil.reason.startswith("invalid script: line 2: 'run' executes Python code")
    assert evil.script == f'go http://{web.host}\nrun "import os"'
    assert TestResult.objects.get(test__slug="broken-template").reason.startswith("invalid script: template error")
    assert web.hits == {}


def test_consecutive_failures_count_up_and_reset_on_a_pass(web):
    site = make_site(servername=web.host)
    make_test(body="go {{ site.url }}\ncode 200", sites=[site])
    web.route("/", status=500)
    for _ in range(3):
        services.run_checks(services.select_checks(), workers=0)
    check = Check.objects.get()
    assert (check.status, check.consecutive_failures) == ("failed", 3)
    failing_since = check.status_since
    web.route("/")
    services.run_checks(services.select_checks(), workers=0)
    check.refresh_from_db()
    assert (check.status, check.consecutive_failures) == ("passed", 0)
    assert check.status_since > failing_since
    assert TestResult.objects.count() == 4
    assert list(TestResult.objects.values_list("succeeded", flat=True)) == [True, False, False, False]


def test_run_check_runs_one_check_and_returns_plain_data(web):
    site = make_site(servername=web.host)
    make_test(sites=[site])
    services.sync_checks()
    data = services.run_check(Check.objects.get().pk)
    assert data == {
        "test": "front-page",
        "site": "ljworld",
        "server": None,
        "status": "passed",
        "succeeded": True,
        "duration_ms": data["duration_ms"],
        "failed_line": None,
        "reason": "",
        "result_id": TestResult.objects.get().pk,
        "location": None,
    }


def test_a_per_server_check_renders_the_server(web):
    web1 = make_server("web1", hostname=web.host)
    site = make_site(servers=[web1])
    make_test(body="go http://{{ server.hostname }}/\nfind 'Latest News'", sites=[site], per_server=True)
    report = services.run_checks(services.select_checks(), workers=0)
    assert [(item.server, item.status) for item in report.results] == [("web1", "passed")]
    assert TestResult.objects.get().server == web1


def test_secrets_never_reach_results(web):
    web.route("/", status=403)
    site = make_site(servername=web.host, variables={"password": "hunter2", "user": "ops"})
    make_test(body='go {{ site.url }}/?pw={{ password }}\necho {{ password }}\ncode 200\nfind "{{ password }}"', sites=[site])
    report = services.run_checks(services.select_checks(), workers=0)
    result = TestResult.objects.get()
    assert result.status == "failed"
    for text in (result.content, result.reason, result.script, report.results[0].reason):
        assert "hunter2" not in text
    assert MASK in result.script
    assert MASK in result.content
    assert web.requests_to("/")[0].query == {"pw": ["hunter2"]}  # the site did get it


def test_a_worker_killed_mid_run_is_recorded_crashed_and_the_run_goes_on(web):
    def kill_worker(request: object) -> None:
        (pid,) = child_pids()  # one worker: the one fetching this page
        os.kill(pid, signal.SIGKILL)

    web.route("/slow", delay=10, on_request=kill_worker)
    a, killed, c = make_site("a", web.host), make_site("b", web.url("/slow")), make_site("c", web.host)
    make_test(sites=[a, killed, c], timeout=60)
    with override_settings(KONG_KILL_GRACE=30):
        report = services.run_checks(services.select_checks(), workers=1)
    assert [(item.site, item.status) for item in report.results] == [("a", "passed"), ("b", "crashed"), ("c", "passed")]
    crashed = TestResult.objects.get(site=killed)
    assert crashed.reason == "the worker process was killed by SIGKILL while running the check"
    assert Check.objects.get(site=killed).status == "crashed"


def test_timeout_option_overrides_the_test_timeout(web):
    web.route("/slow", delay=3)
    site = make_site(servername=web.url("/slow"))
    make_test(sites=[site], timeout=60)
    report = services.run_checks(services.select_checks(), workers=0, timeout=0.5)
    assert report.results[0].status == "timeout"
    assert report.results[0].reason == "timed out after 0.5 s at line 1"


def test_request_timeout_setting_reaches_the_runner(web):
    web.route("/slow", delay=2)
    site = make_site(servername=web.url("/slow"))
    make_test(sites=[site])
    with override_settings(KONG_REQUEST_TIMEOUT=0.5):
        report = services.run_checks(services.select_checks(), workers=0)
    assert report.results[0].reason == "request timed out after 0.5 s at line 1"


def test_a_check_dropped_mid_run_still_keeps_its_result(web):
    site = make_site(servername=web.host)
    make_test(sites=[site])
    checks = list(services.select_checks())
    Check.objects.all().delete()
    report = services.run_checks(checks, workers=0)
    assert report.results[0].status == "passed"
    assert TestResult.objects.count() == 1


def test_errors_are_recorded_with_reasons():
    port = closed_port()
    refused = make_site("refused", f"127.0.0.1:{port}")
    nxdomain = make_site("nxdomain", "foo.invalid")
    make_test(sites=[refused, nxdomain])
    services.run_checks(services.select_checks(), workers=0)
    reasons = dict(TestResult.objects.values_list("site__slug", "reason"))
    assert reasons == {
        "refused": f"connection refused by 127.0.0.1:{port} at line 1",
        "nxdomain": "DNS lookup failed for foo.invalid at line 1",
    }
    assert set(TestResult.objects.values_list("status", flat=True)) == {"error"}


def test_dry_run_validates_without_running(web):
    site = make_site(servername=web.host)
    make_test("good", sites=[site])
    make_test("bad", body="go {{ site.url }}\nsave_html /tmp/x", sites=[site])
    problems = {check.test.slug: error for check, error in services.dry_run(services.select_checks())}
    assert problems["good"] is None
    assert problems["bad"] is not None
    assert problems["bad"].line == 2
    assert web.hits == {}
    assert not TestResult.objects.exists()


def test_with_safe_mode_off_full_twill_runs(web):
    site = make_site(servername=web.host)
    make_test(body='run "answer = str(6 * 7)"\necho the answer is $answer\ngo {{ site.url }}', sites=[site])
    with override_settings(KONG_SAFE_MODE=False):
        report = services.run_checks(services.select_checks(), workers=0)
    assert report.results[0].status == "passed"
    assert "the answer is 42" in TestResult.objects.get().content
    report = services.run_checks(services.select_checks(), workers=0)  # safe mode is back
    assert report.results[0].reason.startswith("invalid script: line 1: 'run' executes Python code")


# -- regressions: recording once, claims that belong to their token ---------------


def test_a_closed_stdout_mid_run_still_records_each_result_once(web):
    """Regression: a batch was recorded, then the progress callback raised
    (``check_sites | head``) before the batch was cleared, and the ``finally``
    recorded the same batch again: two rows and a doubled failure streak."""
    web.route("/", status=500)
    sites = [make_site(f"s{n}", servername=web.host) for n in range(3)]
    make_test(sites=sites)

    def closed_stdout(report: services.CheckReport, done: int, total: int) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(BrokenPipeError):
        services.run_checks(services.select_checks(), workers=0, on_result=closed_stdout)
    assert TestResult.objects.count() == 3
    assert sorted(Check.objects.values_list("consecutive_failures", flat=True)) == [1, 1, 1]


def test_recording_clears_only_the_recorders_own_claim(web):
    """Regression: recording cleared claimed_until/claim_token whoever held
    them, so a run whose lease had expired wiped the claim of the run that
    took the check over, and recorded a second result for the slot."""
    site = make_site("a", servername=web.host)
    make_test(sites=[site])
    now = timezone.now()
    first = services.claim_due(services.select_checks(), now=now, token="first")
    check = first.get()
    later = now + timedelta(seconds=10 * 60)  # the first run's lease has expired...
    assert services.claim_due(services.select_checks(), now=later, token="second").count() == 1

    report = services.run_checks([check], workers=0, token="first")  # ...and it finishes late

    assert report.results == []
    assert TestResult.objects.count() == 0
    assert Check.objects.get().claim_token == "second"


@pytest.mark.django_db(transaction=True)
@override_settings(KONG_CLAIM_LEASE=1)
def test_a_run_renews_its_leases_on_a_timer_while_one_long_check_runs(web):
    """Regression: leases were renewed only when results were written, so a
    check longer than the lease could be claimed again by an overlapping run."""
    site = make_site("a", servername=web.host)
    make_test(sites=[site], timeout=30)
    claimed_by_another: list[int] = []

    def meanwhile(request: object) -> None:
        def claim() -> None:
            try:
                other = services.claim_due(Check.objects.all(), token="another")
                claimed_by_another.append(other.count())
            finally:
                connection.close()

        timer = threading.Timer(2.5, claim)
        timer.start()
        timers.append(timer)

    timers: list[threading.Timer] = []
    web.route("/", delay=4, on_request=meanwhile)
    token = services.new_token()
    report = services.run_checks(services.claim_due(services.select_checks(), token=token), workers=1, token=token)
    for timer in timers:
        timer.join()
    assert claimed_by_another == [0]
    assert [result.status for result in report.results] == ["passed"]
    assert TestResult.objects.count() == 1


def test_list_and_dry_run_write_nothing(web):
    """Regression: --list and --dry-run synced Check rows into the database."""
    site = make_site("a", servername=web.host)
    make_test(sites=[site], body="go {{ site.url }}\nbogus")
    out = StringIO()
    call_command("check_sites", "--list", stdout=out)
    assert "a/front-page" in out.getvalue()
    with pytest.raises(SystemExit):
        call_command("check_sites", "--dry-run", stdout=out)
    call_command("check_sites", "--list", "--due", stdout=out)
    assert Check.objects.count() == 0
    assert TestResult.objects.count() == 0


def test_a_task_worker_reuses_one_pool_for_batch_after_batch(web):
    """A db_worker runs task after task: the second batch reuses the check
    processes the first one forked (forking per batch halved its throughput)."""
    from kong.services import running

    sites = [make_site(f"r{n}", servername=web.host) for n in range(2)]
    make_test(sites=sites)
    try:
        services.run_checks(services.select_checks(), workers=2, reuse_pool=True)
        shared = running._shared_pool
        assert shared is not None
        assert shared.spawned == 2
        services.run_checks(services.select_checks(), workers=2, reuse_pool=True)
        assert running._shared_pool is shared
        assert shared.spawned == 2  # no new fork
        assert TestResult.objects.count() == 4
    finally:
        if running._shared_pool is not None:
            running._shared_pool.close()
            running._shared_pool = None
