"""A corpus of bad input, each kind driven through Kong's public path.

Every kind must end as a recorded TestResult with a status (``error``,
``failed`` or ``timeout``), a reason a person understands and, where a line
is to blame, ``failed_line``; or as a command error with exit code 3 and one
line of text. Never a traceback, a hang past the timeout, a lost result or a
silently skipped check.

The pages come from real servers on 127.0.0.1 (``tests/fleet.py``): gzip
bombs, trickles, resets, silences, loops, a self-signed TLS server and a
listener that hangs up during the TLS handshake.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings

from kong import services
from kong.models import Check, Test, TestResult, Type
from tests.factories import make_site, make_test, make_type
from tests.fleet import FakeSite, RawServer, closed_port, gzip_bomb, reset_mid_body, self_signed_tls, trickle

pytestmark = pytest.mark.django_db

TIMEOUT = 2  # Test.timeout of every check here (seconds)
REQUEST_TIMEOUT = 1  # KONG_REQUEST_TIMEOUT
KILL_GRACE = 1  # KONG_KILL_GRACE: the hard kill comes this long after the timeout
# How long past its timeout a check may take to be recorded: the hard kill's
# grace plus room for a busy, shared machine. Generous by design.
SLACK = KILL_GRACE + 10


# -- misbehaving pages ----------------------------------------------------------------


def meta_refresh(to: str) -> str:
    return f'<html><head><meta http-equiv="refresh" content="0; url={to}"></head><body>Moving</body></html>'


def endless_refresh(handler: BaseHTTPRequestHandler) -> None:
    """Each page refreshes to a new one (?n=1, ?n=2, …): no URL ever repeats."""
    number = int(parse_qs(urlsplit(handler.path).query).get("n", ["0"])[0])
    body = meta_refresh(f"/endless?n={number + 1}").encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "text/html")
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(body)


def garbage(handler: BaseHTTPRequestHandler) -> None:
    handler.wfile.write(b"HELLO THERE, THIS IS NOT HTTP\r\n\r\n")


def hang_up(handler: BaseHTTPRequestHandler) -> None:
    handler.connection.close()  # no status line, no headers, nothing


def serve_bad_pages(web: FakeSite) -> None:
    web.route("/reset", respond=reset_mid_body)
    web.route("/slow", delay=5)
    web.route("/trickle", respond=trickle(0.25))
    web.route("/loop", status=302, headers={"Location": "/loop"})
    web.route("/refresh-a", body=meta_refresh("/refresh-b"))
    web.route("/refresh-b", body=meta_refresh("/refresh-a"))
    web.route("/endless", respond=endless_refresh)
    web.route("/big", payload=b"<p>Latest News</p>" * (10_500_000 // 18))  # 10 MB
    web.route("/binary", payload=bytes(range(256)) * 4096, content_type="application/octet-stream")
    web.route(
        "/bad-utf8", payload=b"<html><title>caf\xe9</title><body>\xff\xfe\xc3\x28 Latest News</body></html>"
    )
    web.route("/bomb", payload=gzip_bomb(150 * 1024 * 1024), headers={"Content-Encoding": "gzip"})
    forms = "".join(
        f"<form name='f{n}' action='/s'><input name='q'><input type='submit'></form>" for n in range(10_000)
    )
    web.route("/forms", body=f"<html><title>Forms</title><body>{forms}</body></html>")
    web.route("/aaa", body="a" * 40 + "!")
    web.route("/garbage", respond=garbage)
    web.route("/hang-up", respond=hang_up)
    web.route("/empty", body="")
    web.route("/broken", status=500, body="<html><body>Internal Server Error</body></html>")


# -- the corpus --------------------------------------------------------------------


@dataclass
class Case:
    """One kind of bad input: a test body (``<web>``, ``<tls>``, ``<silent>``,
    ``<handshake>`` and ``<refused>`` stand for the servers' base URLs), and
    the result it must leave."""

    kind: str
    body: str
    status: str
    reason: str  # a regular expression the recorded reason must match
    line: int | None
    servername: str = "<web>"
    settings: dict[str, Any] = field(default_factory=dict)
    # Another acceptable (status, reason, line), where the ending depends on the machine's speed.
    also: tuple[str, str, int | None] | None = None
    xfail: str = ""


CASES = [
    # Template
    Case("template syntax error", "{% if site.url %}go {{ site.url }}\ncode 200", "error",
         r"^invalid script: template error: Unclosed tag on line 1: 'if'", None),
    Case("unknown template tag", "{% frobnicate %}\ngo {{ site.url }}", "error",
         r"^invalid script: template error: Invalid block tag on line 1: 'frobnicate'", None),
    Case("missing template variable", "go {{ site.url }}{{ no_such_path }}\ngo {{ no_such_variable }}", "error",
         r"^invalid script: line 2: go takes <url>, not 0 arguments$", 2),
    # Script
    Case("unknown command", "go {{ site.url }}\nfrobnicate now", "error",
         r"^invalid script: line 2: unknown twill command 'frobnicate'$", 2),
    Case("unsafe command", 'go {{ site.url }}\nrun "import os"', "error",
         r"^invalid script: line 2: 'run' executes Python code and is not allowed in safe mode$", 2),
    Case("unterminated quote", 'go {{ site.url }}\nfind "Latest News', "error",
         r"^invalid script: line 2: cannot parse .*: unterminated quote$", 2),
    Case("wrong number of arguments", "go {{ site.url }}\ncode 200 404 500", "error",
         r"^invalid script: line 2: code takes <should_be>, not 3 arguments$", 2),
    Case("bad regular expression", 'go {{ site.url }}\nfind "(unclosed"', "error",
         r"^invalid script: line 2: bad regular expression '\(unclosed': missing \), unterminated subpattern", 2),
    Case("no commands at all", "# nothing but a comment\n\n", "error",
         r"^invalid script: the script has no commands$", None),
    Case("code that is not a number", "go {{ site.url }}\ncode two-hundred", "error",
         r"^invalid script: line 2: code takes an HTTP status number, not 'two-hundred'$", 2),
    # URL
    Case("non-http URL", "go ftp://127.0.0.1/pub/", "error",
         r"^invalid script: line 1: only http\(s\) URLs are allowed, not ftp: 'ftp://127.0.0.1/pub/'$", 1),
    Case("scheme that looks like a host and port", "go file:0/etc/passwd", "error",
         r"^invalid script: line 1: only http\(s\) URLs are allowed, not file", 1),
    Case("invalid URL", "go http://[127.0.0.1/", "error",
         r"^invalid script: line 1: invalid URL 'http://\[127\.0\.0\.1/': Invalid IPv6 URL$", 1),
    Case("relative URL with no page yet", "go /news/\ncode 200", "error", r"cannot go to '/news/'", 1),
    Case("site with no servername", "go {{ site.url }}\ncode 200", "error",
         r"^invalid script: line 1: invalid URL 'http://': it names no host$", 1, servername=""),
    # Network
    Case("DNS failure", "go {{ site.url }}\ncode 200", "error",
         r"^DNS lookup failed for kong-test\.invalid at line 1$", 1, servername="kong-test.invalid"),
    Case("connection refused", "go {{ site.url }}\ncode 200", "error",
         r"^connection refused by 127\.0\.0\.1:\d+ at line 1$", 1, servername="<refused>"),
    Case("connection reset mid-body", "go <web>/reset\ncode 200", "error",
         r"^connection reset by 127\.0\.0\.1:\d+ while reading the page at line 1$", 1),
    Case("server hangs up without answering", "go <web>/hang-up", "error",
         r"^127\.0\.0\.1:\d+ closed the connection without sending a response at line 1$", 1),
    Case("not HTTP at all", "go <web>/garbage", "error",
         r"^127\.0\.0\.1:\d+ sent something that is not a valid HTTP response \(illegal status line: .*\) at line 1$", 1),
    Case("TLS handshake failure", "go <handshake>/\ncode 200", "error",
         r"^TLS error with 127\.0\.0\.1:\d+: the server closed the connection during the TLS handshake at line 1$", 1),
    Case("self-signed certificate", "go <tls>/\ncode 200", "error",
         r"^TLS error with 127\.0\.0\.1:\d+: its certificate is not trusted \(self-signed certificate\) at line 1$", 1),
    Case("TLS to a plain HTTP port", "go <web-tls>/\ncode 200", "error",
         r"^TLS error with 127\.0\.0\.1:\d+: the server did not answer in TLS \(plain http on that port\?\) at line 1$", 1),
    Case("read timeout", "go <web>/slow\ncode 200", "timeout", r"^request timed out after 1 s at line 1$", 1),
    Case("server that accepts and never answers", "go <silent>/\ncode 200", "timeout",
         r"^request timed out after 1 s at line 1$", 1),
    Case("page that trickles forever", "go <web>/trickle\ncode 200", "timeout", r"^timed out after 2 s", 1),
    Case("script that sleeps past its timeout", "go {{ site.url }}\nsleep 30", "timeout",
         r"^timed out after 2 s at line 2$", 2),
    # Content
    Case("redirect loop", "go <web>/loop\ncode 200", "error",
         r"^too many redirects \(a redirect loop\?\) from http://127\.0\.0\.1:\d+/loop at line 1$", 1),
    Case("meta refresh loop", "go <web>/refresh-a\ncode 200", "error",
         r"^meta refresh loop: http://127\.0\.0\.1:\d+/refresh-a refreshes back to a page it came from at line 1$", 1),
    Case("endless meta refresh", "go <web>/endless\ncode 200", "error",
         r"^stopped after 50 requests in one step, a redirect or meta refresh loop", 1),
    Case("10 MB page", "go <web>/big\nfind 'Latest News'", "error",
         r"^page larger than the 10 MiB limit \(read 10\.\d MiB of http://127\.0\.0\.1:\d+/big\) at line 1$", 1),
    Case("binary body", "go <web>/binary\nfind 'Latest News'", "failed", r"no match to 'Latest News' at line 2", 2),
    Case("invalid UTF-8", "go <web>/bad-utf8\nfind 'Latest News'\nfind 'Missing'", "failed",
         r"^no match to 'Missing' at line 3$", 3),
    Case("gzip bomb", "go <web>/bomb\nfind x", "error",
         r"^page larger than the 10 MiB limit \(read 10\.\d MiB of http://127\.0\.0\.1:\d+/bomb\) at line 1$", 1),
    Case("gzip bomb under a lower limit", "go <web>/bomb\nfind x", "error",
         r"^page larger than the 1 MiB limit \(read 1\.\d MiB of ", 1, settings={"KONG_MAX_PAGE_BYTES": 1 << 20}),
    # twill's ResultWrapper._fix_forms searches the whole page once per form
    # (quadratic): 10,000 forms take about 8 s to load, so the timeout ends it.
    Case("10,000 forms", "go <web>/forms\nfv 10001 q hello", "timeout", r"^timed out after 2 s at line 1$", 1,
         also=("failed", r"^Form not found at line 2$", 2)),
    Case("catastrophic regular expression", "go <web>/aaa\nfind '(a+)+$'", "timeout", r"^timed out after 2 s", 2),
    Case("empty page", "go <web>/empty\nfind 'Latest News'", "error",
         r"^the page is empty \(http://127\.0\.0\.1:\d+/empty\) at line 1$", 1),
    Case("server error", "go <web>/broken\ncode 200", "failed", r"^code 500 != 200 at line 2$", 2),
]  # fmt: skip


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return self_signed_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def servers(web: FakeSite, tls: Any) -> Iterator[dict[str, str]]:
    serve_bad_pages(web)
    secure = FakeSite(tls).start()
    silent, handshake = RawServer("silent").start(), RawServer("hang-up").start()
    yield {
        "<web-tls>": f"https://{web.host}",
        "<web>": web.url("").rstrip("/"),
        "<tls>": secure.url("").rstrip("/"),
        "<silent>": f"http://127.0.0.1:{silent.port}",
        "<handshake>": f"https://127.0.0.1:{handshake.port}",
        "<refused>": f"127.0.0.1:{closed_port()}",
    }
    for server in (secure, silent, handshake):
        server.stop()


def fill(text: str, servers: dict[str, str]) -> str:
    for token, url in servers.items():
        text = text.replace(token, url)
    return text


def run_case(case: Case, servers: dict[str, str]) -> tuple[TestResult, float]:
    site = make_site("bad", fill(case.servername, servers).removeprefix("http://"))
    make_test("bad-input", body=fill(case.body, servers), sites=[site], timeout=TIMEOUT)
    options = {"KONG_REQUEST_TIMEOUT": REQUEST_TIMEOUT, "KONG_KILL_GRACE": KILL_GRACE, **case.settings}
    started = time.monotonic()
    with override_settings(**options):
        report = services.run_checks(services.select_checks(tests=["bad-input"]), workers=1)
    elapsed = time.monotonic() - started
    assert len(report.results) == 1  # never lost, never skipped
    return TestResult.objects.get(test__slug="bad-input", site=site), elapsed


def params() -> Iterator[Any]:
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        yield pytest.param(case, id=case.kind, marks=marks)


@pytest.mark.parametrize("case", list(params()))
def test_bad_input_is_recorded_with_a_status_a_reason_and_a_line(case: Case, servers: dict[str, str]) -> None:
    result, elapsed = run_case(case, servers)
    summary = (result.status, result.reason, result.failed_line)
    assert result.status in ("error", "failed", "timeout"), summary
    assert not result.succeeded
    status, reason, line = case.status, case.reason, case.line
    if case.also and result.status == case.also[0]:
        status, reason, line = case.also
    assert result.status == status, summary
    assert re.search(reason, result.reason), summary
    assert result.failed_line == line, summary
    assert "Traceback" not in result.content, result.content
    assert "\n" not in result.reason, summary
    assert elapsed < TIMEOUT + SLACK, elapsed  # never a hang past the timeout


# -- schedules: refused on save; a bad one stored anyway never stops a run ------------


SCHEDULES = [
    pytest.param("", r"^a schedule needs exactly 5 fields \(minute hour day-of-month month day-of-week\), got 0: ''$",
                 id="empty schedule"),
    pytest.param("0 0 * * * *", r"^a schedule needs exactly 5 fields .*, got 6: '0 0 \* \* \* \*'$", id="6-field cron"),
    pytest.param("0 0 30 2 *", r"^'0 0 30 2 \*' never fires \(no such date in 50 years\)$", id="cron that never fires"),
]  # fmt: skip


@pytest.mark.parametrize(("expression", "message"), SCHEDULES)
def test_a_bad_schedule_is_refused_with_a_clear_message(expression: str, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        make_test("bad-schedule", schedule=expression)
    (text,) = refused.value.message_dict["schedule"]
    assert re.match(message, text), text
    assert not Test.objects.filter(slug="bad-schedule").exists()


@pytest.mark.parametrize(("expression", "message"), SCHEDULES)
def test_a_bad_schedule_stored_by_a_raw_update_still_runs_when_due(
    expression: str, message: str, web: FakeSite
) -> None:
    site = make_site("ljworld", web.host)
    test = make_test("front-page", body="go {{ site.url }}\nfind 'Latest News'", sites=[site])
    Test.objects.filter(pk=test.pk).update(schedule=expression)  # what Test.save refuses
    stdout = io.StringIO()
    call_command("check_sites", "--due", "--workers", "1", "--format", "json", stdout=stdout)
    assert json.loads(stdout.getvalue())["passed"] == 1
    (result,) = TestResult.objects.filter(test=test)
    assert result.status == "passed"
    check = Check.objects.get(test=test, site=site)
    assert check.next_due_at is not None  # on the default schedule until it is fixed


# -- inventory ------------------------------------------------------------------------


def command_error(*args: str) -> CommandError:
    with pytest.raises(CommandError) as raised:
        call_command("check_sites", *args, stdout=io.StringIO(), stderr=io.StringIO())
    return raised.value


def test_a_test_with_no_sites_or_types_is_one_clear_line_and_exit_3() -> None:
    make_site("ljworld")
    make_test("orphan")
    error = command_error("-t", "orphan")
    assert error.returncode == 3
    assert str(error) == "no checks match test 'orphan': no active test applies to a live site there"


def test_an_unknown_test_is_one_clear_line_and_exit_3() -> None:
    error = command_error("-t", "no-such-test")
    assert (error.returncode, str(error)) == (3, "unknown test 'no-such-test'")


def write_fixture(path: Path, types: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(types))
    return path


def test_a_duplicate_slug_in_loaddata_fails_and_loads_nothing(tmp_path: Path) -> None:
    make_type("news", name="News")
    fixture = write_fixture(tmp_path / "types.json", [
        {"model": "kong.type", "pk": 100, "fields": {"name": "Sports", "slug": "sports", "description": ""}},
        {"model": "kong.type", "pk": 101, "fields": {"name": "News again", "slug": "news", "description": ""}},
    ])  # fmt: skip
    with pytest.raises(
        Exception, match=r"Could not load kong\.Type\(pk=101\): UNIQUE constraint failed: kong_type\.slug"
    ):
        call_command("loaddata", str(fixture), verbosity=0)
    assert sorted(Type.objects.values_list("slug", "name")) == [("news", "News")]  # nothing half-loaded


@pytest.mark.xfail(
    strict=True,
    reason="natural keys: Django's deserializer looks each object up by its slug, so the second object "
    "with a slug silently overwrites the first; loaddata exits 0",
)
def test_a_duplicate_natural_key_in_loaddata_fails_and_loads_nothing(tmp_path: Path) -> None:
    fixture = write_fixture(tmp_path / "types.json", [
        {"model": "kong.type", "fields": {"name": "News", "slug": "news", "description": ""}},
        {"model": "kong.type", "fields": {"name": "News again", "slug": "news", "description": ""}},
    ])  # fmt: skip
    with pytest.raises(Exception, match="news"):
        call_command("loaddata", str(fixture), verbosity=0)
    assert not Type.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    os.environ.get("KONG_TEST_DATABASE") == "postgres", reason="the subprocess opens the SQLite file"
)
def test_a_duplicate_slug_in_loaddata_exits_non_zero_in_a_real_process(tmp_path: Path) -> None:
    make_type("news", name="News")
    fixture = write_fixture(tmp_path / "types.json", [
        {"model": "kong.type", "pk": 100, "fields": {"name": "Sports", "slug": "sports", "description": ""}},
        {"model": "kong.type", "pk": 101, "fields": {"name": "News again", "slug": "news", "description": ""}},
    ])  # fmt: skip
    env = {
        **os.environ,
        "KONG_SQLITE_PATH": str(connection.settings_dict["NAME"]),
        "PYTHONWARNINGS": "ignore",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    run = subprocess.run(
        [sys.executable, "-m", "django", "loaddata", str(fixture), "--settings=tests.settings"],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode != 0
    assert "Could not load kong.Type(pk=101): UNIQUE constraint failed: kong_type.slug" in run.stderr
    assert sorted(Type.objects.values_list("slug", "name")) == [("news", "News")]
