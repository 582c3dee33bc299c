"""The fault suite: real processes meet the faults an ops team meets every week.

Each case asserts what users see (exit codes, rows) and that nothing is lost
or recorded twice. The processes are real ``python -m django`` commands on
the test database (a SQLite file, or PostgreSQL with
``KONG_TEST_DATABASE=postgres``), so the data is committed:
``transaction=True``. The database-unreachable case lives beside the other
exit-code tests in ``tests/test_check_sites.py``.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db.models import Count
from django.utils import timezone

from kong import services
from kong.conf import kong_settings
from kong.models import Check, TestResult
from tests.factories import make_site, make_test, make_type
from tests.fleet import child_pids
from tests.test_due import start_check_sites
from tests.test_scheduler import assert_nothing_half_written, start_scheduler

pytestmark = pytest.mark.django_db(transaction=True)


def fleet(web, sites: int, *, types: tuple[str, ...] = ("news",), schedule: str = "0 0 1 1 *", **test: object):
    """``sites`` sites per type on ``web`` and one test over all of them. The
    default schedule is yearly: a check that ran is not due again in a test."""
    kinds = [make_type(slug) for slug in types]
    for kind in kinds:
        for number in range(sites):
            make_site(f"{kind.slug}{number}", web.host, type=kind)
    make_test("front-page", body='go {{ site.url }}\ncode 200\nfind "Latest News"', types=kinds, schedule=schedule, **test)


def wait_for(condition, what: str, *, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def results_per_check() -> Counter[tuple[int, int]]:
    return Counter(dict(((row["test"], row["site"]), row["n"]) for row in
                        TestResult.objects.values("test", "site").annotate(n=Count("id")).order_by()))  # fmt: skip


def test_sigkill_of_a_pool_worker_mid_check_ends_that_check_crashed_and_the_run_completes(web):
    web.route("/", body="<html><body>Latest News</body></html>", delay=1.5)
    fleet(web, 6)
    process = start_check_sites("--workers", "3")
    wait_for(lambda: len(child_pids(process.pid)) >= 3 and web.hits.get("/", 0) >= 3, "three busy workers")
    victim = child_pids(process.pid)[0]
    os.kill(victim, signal.SIGKILL)
    _out, err = process.communicate(timeout=120)
    assert process.returncode == 2, err  # one check crashed
    assert "Traceback" not in err
    statuses = Counter(TestResult.objects.values_list("status", flat=True))
    assert statuses == {"passed": 5, "crashed": 1}
    assert "was killed by SIGKILL" in TestResult.objects.get(status="crashed").reason
    assert set(results_per_check().values()) == {1}


def test_sigkill_of_check_sites_due_mid_run_loses_nothing_and_the_next_run_does_the_rest(web):
    web.route("/", body="<html><body>Latest News</body></html>", delay=0.5)
    fleet(web, 12)
    process = start_check_sites("--due", "--workers", "2")
    wait_for(lambda: TestResult.objects.count() >= 2, "a few results")
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    recorded = TestResult.objects.count()
    assert 2 <= recorded < 12
    assert Check.objects.filter(claim_token__gt="").exists()  # its claims outlive it...

    later = timezone.now() + timedelta(seconds=float(kong_settings.CLAIM_LEASE) + 1)  # ...until the lease ends
    token = services.new_token()
    checks = services.claim_due(services.select_checks(), now=later, token=token)
    assert checks.count() == 12 - recorded  # exactly the checks it did not record
    services.run_checks(checks, workers=2, token=token)

    assert TestResult.objects.count() == 12
    assert set(results_per_check().values()) == {1}
    assert_nothing_half_written()


def test_sigterm_of_kong_scheduler_mid_run_leaves_nothing_half_written_and_releases_claims(web):
    web.route("/", body="<html><body>Latest News</body></html>", delay=3)
    fleet(web, 6)
    process = start_scheduler("--workers", "2", "--grace", "0")
    wait_for(lambda: web.hits.get("/", 0) >= 2, "two checks in flight")
    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert not Check.objects.filter(claim_token__gt="").exists()
    assert_nothing_half_written()


def test_kong_scheduler_keeps_running_through_a_two_minute_outage_and_runs_each_check_once_per_slot(web):
    """Regression: every check slower than the tick was started again on the
    next tick, and the second copy's outcome crashed the scheduler (KeyError),
    which under systemd's Restart=always became a crash loop."""
    web.route("/", delay=600)  # the outage: every site hangs
    fleet(web, 3, schedule="* * * * *", timeout=3)  # each check outlasts many ticks
    started = timezone.now()
    process = start_scheduler("--workers", "4", "--grace", "0", "--no-prune")
    try:
        time.sleep(125)
        assert process.poll() is None, process.communicate()  # still running
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    results = list(TestResult.objects.values_list("test_id", "site_id", "run_date", "status"))
    assert {status for *_, status in results} == {"timeout"}
    slots = Counter((test, site, run_date.replace(second=0, microsecond=0)) for test, site, run_date, _ in results)
    assert max(slots.values()) == 1  # never twice in one slot
    minutes = (timezone.now() - started).total_seconds() / 60
    per_check = Counter((test, site) for test, site, *_ in results)
    assert len(per_check) == 3
    assert all(2 <= runs <= int(minutes) + 1 for runs in per_check.values()), per_check
    assert web.hits["/"] == len(results)  # a hit for each result: nothing started twice


def test_64_workers_and_two_concurrent_runs_lose_no_result_in_the_database(web):
    fleet(web, 60, types=("news", "sports"))
    first = start_check_sites("-T", "news", "--workers", "64", "--quiet")
    second = start_check_sites("-T", "sports", "--workers", "64", "--quiet")
    for process in (first, second):
        _out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    assert TestResult.objects.count() == 120
    assert set(results_per_check().values()) == {1}
    assert_nothing_half_written()


def test_stdout_closed_mid_run_records_each_result_once(web):
    """Regression: a closed stdout raised while a recorded batch was still
    pending, and the batch was recorded a second time."""
    web.route("/", status=500, delay=0.2)  # failures print as they happen
    fleet(web, 10)
    process = start_check_sites("--workers", "2")
    assert process.stdout is not None
    process.stdout.readline()  # the reader goes away, like `check_sites | head -1`
    process.stdout.close()
    process.wait(timeout=120)
    err = process.stderr.read() if process.stderr else ""
    assert "Traceback" not in err
    assert TestResult.objects.count() == 10
    assert set(results_per_check().values()) == {1}
    assert sorted(Check.objects.values_list("consecutive_failures", flat=True)) == [1] * 10


@pytest.mark.parametrize("args", [[], ["--due"]])
def test_check_sites_with_the_database_unreachable_exits_3_with_one_line(tmp_path, args):
    """Regression: a traceback and exit 1, which Nagios reads as WARNING."""
    from tests.test_check_sites import assert_one_line_exit_3, check_sites_with

    run = check_sites_with({"KONG_SQLITE_PATH": str(tmp_path / "gone" / "kong.sqlite3")}, *args)
    assert_one_line_exit_3(run, "cannot use the database")
