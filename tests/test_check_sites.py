"""check_sites: real process exit codes, output formats and flags.

The exit-code tests run ``python -m django check_sites`` in a subprocess
against the test database file (``KONG_SQLITE_PATH``), so their data must be
committed (``transaction=True``). Output tests run the same command
in-process, which is quicker and prints the same bytes.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from kong.models import Check, TestResult
from tests.factories import make_server, make_site, make_test, make_type
from tests.fleet import closed_port

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.django_db


def real_process(test: Callable[..., None]) -> Callable[..., None]:
    """Mark a test that runs the command in a subprocess: its data must be
    committed, to the SQLite file the subprocess opens."""
    test = pytest.mark.django_db(transaction=True)(test)
    on_postgres = os.environ.get("KONG_TEST_DATABASE") == "postgres"
    return pytest.mark.skipif(on_postgres, reason="the subprocess opens the SQLite test file")(test)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def run_inline(*args: str) -> Run:
    """Run the command in this process, as a subprocess would see it."""
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        call_command("check_sites", *args, stdout=stdout, stderr=stderr)
        code = 0
    except SystemExit as exited:
        code = int(exited.code or 0)
    except CommandError as error:
        code = error.returncode
        stderr.write(f"CommandError: {error}\n")
    return Run(code, stdout.getvalue(), stderr.getvalue())


def check_sites(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real command in a new process on the test database."""
    env = {**os.environ, "KONG_SQLITE_PATH": str(connection.settings_dict["NAME"]), "PYTHONWARNINGS": "ignore"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "-m", "django", "check_sites", "--settings=tests.settings", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def fleet(web):
    """Three sites on a real server: two news sites and a sports site."""
    news, sports = make_type("news"), make_type("sports")
    web1, web2 = make_server("web1"), make_server("web2")
    web.route("/kusports/", body="<html><body>Latest News from KU</body></html>")
    make_site("ljworld", web.host, type=news, servers=[web1])
    make_site("lawrence", web.host, type=news, servers=[web2])
    make_site("kusports", web.url("/kusports/"), type=sports, servers=[web2])
    make_test("front-page", body='go {{ site.url }}\ncode 200\nfind "Latest News"', types=[news, sports])
    make_test("search", body="go {{ site.url }}\ncode 200", types=[news])
    return web


# -- exit codes -------------------------------------------------------------------


@real_process
def test_exit_0_when_everything_passes(fleet):
    run = check_sites()
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1].startswith("5 checks: 5 passed, 0 failed in ")
    assert TestResult.objects.count() == 5


@pytest.mark.parametrize(
    ("break_it", "status"),
    [
        ("failed", "failed"),
        ("error", "error"),
        ("timeout", "timeout"),
    ],
)
@real_process
def test_exit_2_when_any_check_fails_errors_or_times_out(fleet, break_it, status):
    site = make_site("broken", "127.0.0.1:1")
    if break_it == "failed":
        fleet.route("/broken/", status=500)
        site.servername = fleet.url("/broken/")
    elif break_it == "error":
        site.servername = f"127.0.0.1:{closed_port()}"
    else:
        fleet.route("/broken/", delay=3)
        site.servername = fleet.url("/broken/")
    site.save()
    make_test("broken-page", body="go {{ site.url }}\ncode 200", sites=[site], timeout=1)
    run = check_sites()
    assert run.returncode == 2, run.stdout + run.stderr
    assert TestResult.objects.get(site=site).status == status
    assert TestResult.objects.filter(succeeded=True).count() == 5  # the others still ran


def test_exit_2_for_an_invalid_script(fleet):
    site = make_site("blog", fleet.host)
    make_test("evil-blog", body='run "import os"', sites=[site])
    run = run_inline("-t", "evil-blog")
    assert run.returncode == 2
    assert "invalid script: line 1: 'run' executes Python code" in run.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-t", "nope"], "unknown test 'nope'"),
        (["-s", "nope"], "unknown site 'nope'"),
        (["-T", "nope"], "unknown type 'nope'"),
        (["--server", "nope"], "unknown server 'nope'"),
    ],
)
@real_process
def test_exit_3_for_an_unknown_slug_with_one_line_and_no_traceback(fleet, args, message):
    run = check_sites(*args)
    assert run.returncode == 3
    assert run.stderr.strip() == f"CommandError: {message}"
    assert run.stdout == ""
    assert not TestResult.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--workers", "many"], "argument --workers: invalid int value: 'many'"),
        (["--format", "xml"], "argument --format: invalid choice: 'xml'"),
        (["--timeout"], "argument --timeout: expected one argument"),
    ],
)
@real_process
def test_exit_3_for_a_bad_flag(fleet, args, message):
    run = check_sites(*args)
    assert run.returncode == 3
    assert message in run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr.startswith("usage: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "-1"], "--workers must be 0 or more"),
        (["--timeout", "0"], "--timeout must be positive"),
    ],
)
def test_exit_3_for_a_bad_value(fleet, args, message):
    run = run_inline(*args)
    assert (run.returncode, run.stderr.strip()) == (3, f"CommandError: {message}")


@real_process
def test_exit_3_when_there_is_nothing_to_check():
    run = check_sites()
    assert run.returncode == 3
    assert "nothing to check" in run.stderr


def test_exit_3_when_selectors_match_nothing(fleet):
    run = run_inline("-t", "search", "-T", "sports")
    assert run.returncode == 3
    assert run.stderr.strip().startswith("CommandError: no checks match test 'search', type 'sports'")


# -- formats ----------------------------------------------------------------------


@real_process
def test_json_output_has_exactly_the_documented_shape(fleet):
    fleet.route("/kusports/", status=404)
    run = check_sites("--format", "json")
    assert run.returncode == 2
    data = json.loads(run.stdout)
    assert set(data) == {"passed", "failed", "duration_ms", "results"}
    assert (data["passed"], data["failed"]) == (4, 1)
    assert isinstance(data["duration_ms"], float)
    assert len(data["results"]) == 5
    for item in data["results"]:
        assert list(item) == [
            "test",
            "site",
            "server",
            "status",
            "succeeded",
            "duration_ms",
            "failed_line",
            "reason",
            "location",
        ]
        assert item["location"] is None
        assert isinstance(item["test"], str)
        assert isinstance(item["site"], str)
        assert item["server"] is None
        assert isinstance(item["succeeded"], bool)
        assert isinstance(item["duration_ms"], float)
        assert isinstance(item["reason"], str)
    failing = [item for item in data["results"] if not item["succeeded"]]
    assert failing == [
        {
            "test": "front-page",
            "site": "kusports",
            "server": None,
            "status": "failed",
            "succeeded": False,
            "duration_ms": failing[0]["duration_ms"],
            "failed_line": 2,
            "reason": "code 404 != 200 at line 2",
            "location": None,
        }
    ]
    assert all(item["failed_line"] is None and item["reason"] == "" for item in data["results"] if item["succeeded"])


def test_nagios_ok_line(fleet):
    run = run_inline("--format", "nagios")
    assert run.returncode == 0
    line = run.stdout.strip()
    assert line.startswith("KONG OK - 5 of 5 checks passed | passed=5 failed=0 duration=")
    assert line.endswith("s")
    assert "\n" not in line


@real_process
def test_nagios_critical_line_names_the_failures(fleet):
    fleet.route("/kusports/", status=500)
    run = check_sites("--format", "nagios")
    assert run.returncode == 2
    assert run.stdout.strip().startswith(
        "KONG CRITICAL - 1 of 5 checks failed: kusports/front-page | passed=4 failed=1 duration="
    )


def test_junit_xml_has_a_testsuite_per_test_and_a_testcase_per_site(fleet, tmp_path):
    fleet.route("/kusports/", status=500)
    report = tmp_path / "kong.xml"
    run = run_inline("--junit-xml", str(report), "--quiet")
    assert run.returncode == 2
    root = ET.parse(report).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("5", "1", "0")
    suites = {suite.get("name"): suite for suite in root.findall("testsuite")}
    assert set(suites) == {"front-page", "search"}
    assert sorted(case.get("name") for case in suites["front-page"].findall("testcase")) == [
        "kusports",
        "lawrence",
        "ljworld",
    ]
    assert sorted(case.get("name") for case in suites["search"].findall("testcase")) == ["lawrence", "ljworld"]
    assert suites["front-page"].get("failures") == "1"
    (failure,) = root.iter("failure")
    assert failure.get("message") == "code 500 != 200 at line 2"


def test_junit_xml_errors_and_timeouts_are_errors_not_failures(fleet, tmp_path):
    make_test("refused", sites=[make_site("down", f"127.0.0.1:{closed_port()}")])
    report = tmp_path / "kong.xml"
    assert run_inline("-t", "refused", "--junit-xml", str(report)).returncode == 2
    root = ET.parse(report).getroot()
    assert (root.get("failures"), root.get("errors")) == ("0", "1")
    (error,) = root.iter("error")
    assert error.get("type") == "error"
    assert error.get("message").startswith("connection refused by 127.0.0.1:")


def test_junit_xml_into_a_missing_folder_fails_before_running(fleet, tmp_path):
    run = run_inline("--junit-xml", str(tmp_path / "nope" / "kong.xml"))
    assert run.returncode == 3
    assert "--junit-xml: no folder" in run.stderr
    assert not TestResult.objects.exists()


def test_text_output_lists_failures_and_a_summary(fleet):
    fleet.route("/kusports/", status=500)
    run = run_inline()
    assert run.returncode == 2
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].split()[:2] == ["FAIL", "kusports/front-page"]
    assert lines[0].endswith("code 500 != 200 at line 2")
    assert lines[1].startswith("5 checks: 4 passed, 1 failed in ")


def test_verbose_text_output_lists_every_check(fleet):
    run = run_inline("-v", "2")
    assert run.returncode == 0
    assert sum(1 for line in run.stdout.splitlines() if line.strip().startswith("ok  ")) == 5


@real_process
def test_quiet_prints_nothing_when_everything_passes(fleet):
    run = check_sites("--quiet")
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")


def test_quiet_prints_the_failures(fleet):
    fleet.route("/kusports/", status=500)
    run = run_inline("--quiet")
    assert run.returncode == 2
    lines = run.stdout.strip().splitlines()
    assert "kusports/front-page" in lines[0]
    assert lines[-1].startswith("5 checks: 4 passed, 1 failed")


# -- selecting and not running ------------------------------------------------------


def test_list_shows_the_checks_and_runs_nothing(fleet):
    run = run_inline("-l")
    assert run.returncode == 0
    assert run.stdout.splitlines() == [
        "kusports/front-page\t*/10 * * * *\tpending",
        "lawrence/front-page\t*/10 * * * *\tpending",
        "lawrence/search\t*/10 * * * *\tpending",
        "ljworld/front-page\t*/10 * * * *\tpending",
        "ljworld/search\t*/10 * * * *\tpending",
    ]
    assert run_inline("--list", "-t", "search").stdout.count("\n") == 2
    assert not TestResult.objects.exists()
    assert fleet.hits == {}


@real_process
def test_list_with_due_claims_nothing(fleet):
    run = check_sites("--list", "--due")
    assert run.returncode == 0
    assert run.stdout.count("\n") == 5
    assert not Check.objects.filter(claimed_until__isnull=False).exists()


def test_selectors_combine(fleet):
    assert run_inline("-T", "news", "-t", "search", "--format", "json").returncode == 0
    assert set(TestResult.objects.values_list("site__slug", "test__slug")) == {
        ("ljworld", "search"),
        ("lawrence", "search"),
    }
    TestResult.objects.all().delete()
    run_inline("--server", "web2", "-t", "front-page")
    assert set(TestResult.objects.values_list("site__slug", flat=True)) == {"lawrence", "kusports"}
    TestResult.objects.all().delete()
    run_inline("-s", "ljworld", "-s", "kusports", "-t", "front-page")
    assert set(TestResult.objects.values_list("site__slug", flat=True)) == {"ljworld", "kusports"}


def test_dry_run_validates_and_runs_nothing(fleet):
    run = run_inline("--dry-run")
    assert run.returncode == 0
    assert run.stdout.count("ok  ") == 5
    site = make_site("blog", fleet.host)
    make_test("evil", body="go {{ site.url }}\nsave_html /tmp/x", sites=[site])
    run = run_inline("--dry-run")
    assert run.returncode == 2
    assert "invalid  blog/evil  line 2: 'save_html' writes files and is not allowed in safe mode" in run.stdout
    assert not TestResult.objects.exists()
    assert fleet.hits == {}


def test_timeout_flag(fleet):
    fleet.route("/slow/", delay=3)
    site = make_site("slow", fleet.url("/slow/"))
    make_test("slow-page", sites=[site], timeout=60)
    run = run_inline("-t", "slow-page", "--timeout", "0.5", "--format", "json")
    assert run.returncode == 2
    (item,) = json.loads(run.stdout)["results"]
    assert (item["status"], item["reason"]) == ("timeout", "timed out after 0.5 s at line 1")


# -- in-process (call_command) ------------------------------------------------------


def test_workers_0_runs_inline(fleet, capsys):
    call_command("check_sites", "--workers", "0", "--format", "json")
    assert json.loads(capsys.readouterr().out)["passed"] == 5


def test_call_command_raises_system_exit_2_on_failure(fleet, capsys):
    fleet.route("/kusports/", status=500)
    with pytest.raises(SystemExit) as exited:
        call_command("check_sites", "--workers", "0")
    assert exited.value.code == 2


def test_call_command_raises_command_error_with_exit_3(fleet):
    from django.core.management import CommandError

    with pytest.raises(CommandError) as raised:
        call_command("check_sites", "-t", "nope")
    assert raised.value.returncode == 3


@pytest.mark.django_db
def test_a_due_run_with_nothing_due_prints_nothing_so_cron_stays_quiet(web, capsys):
    site = make_site(servername=web.host)
    make_test(body="go {{ site.url }}\ncode 200", sites=[site])
    call_command("check_sites", "--due", "--workers", "0")
    assert "1 check: 1 passed" in capsys.readouterr().out

    call_command("check_sites", "--due", "--workers", "0")  # nothing is due a second time

    assert capsys.readouterr().out == ""


# -- the database is away ---------------------------------------------------------------


def check_sites_with(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **env}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "-m", "django", "check_sites", "--settings=tests.settings", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def assert_one_line_exit_3(run: subprocess.CompletedProcess[str], words: str) -> None:
    assert run.returncode == 3, run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert words in lines[0]


@pytest.mark.parametrize("args", [[], ["--due"], ["--list"], ["--dry-run"]])
def test_exit_3_with_one_line_when_the_sqlite_database_cannot_be_opened(tmp_path, args):
    """Regression: the command exited 1 with a traceback, which Nagios reads as WARNING."""
    run = check_sites_with({"KONG_SQLITE_PATH": str(tmp_path / "no-such-folder" / "kong.sqlite3")}, *args)
    assert_one_line_exit_3(run, "cannot use the database: unable to open database file")


@pytest.mark.parametrize("args", [[], ["--due"]])
def test_exit_3_with_one_line_on_a_database_without_kong_tables(tmp_path, args):
    run = check_sites_with({"KONG_SQLITE_PATH": str(tmp_path / "empty.sqlite3")}, *args)
    assert_one_line_exit_3(run, "run manage.py migrate")


@pytest.mark.postgres
def test_exit_3_with_one_line_when_postgresql_is_unreachable():
    run = check_sites_with({"KONG_TEST_DATABASE": "postgres", "PGPORT": str(closed_port())})
    assert_one_line_exit_3(run, "cannot use the database: connection failed")
