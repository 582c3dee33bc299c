"""kong.engine.runner (and kong.engine.pool, which runs it in worker processes): real
scripts against real pages on 127.0.0.1 or through twill's WSGI transport."""

from __future__ import annotations

import os
import re
import resource
import signal
import sys
import threading
from typing import Any

import pytest
from django.test import override_settings

from kong.engine import pool, runner
from kong.engine.runner import Job, Outcome
from kong.engine.scripts import Script, Step, validate
from kong.masking import MASK
from tests.fleet import FakeSite, closed_port, gzip_bomb, gzipped


def job(text: str, *, key: Any = 1, safe: bool = True, **fields: Any) -> Job:
    """A Job for ``text`` (validated in the same mode it runs in)."""
    fields.setdefault("timeout", 10)
    fields.setdefault("request_timeout", 5)
    return Job(key=key, label=f"job-{key}", script=validate(text, safe=safe), safe=safe, **fields)


def run(text: str, **fields: Any) -> Outcome:
    return runner.execute(job(text, **fields))


# -- statuses ------------------------------------------------------------------


def test_passed(web):
    outcome = run(f'go {web.url()}\ncode 200\nfind "Latest News"\ntitle Home')
    assert (outcome.status, outcome.succeeded, outcome.failed_line, outcome.reason) == ("passed", True, None, "")
    assert outcome.duration_ms > 0
    assert f"==> at {web.url()}" in outcome.log
    assert web.hits == {"/": 1}


def test_failed_on_a_status_code_mismatch(web):
    web.route("/gone", status=404)
    outcome = run(f"go {web.url('/gone')}\ncode 200\nfind never-reached")
    assert outcome.status == "failed"
    assert outcome.failed_line == 2
    assert outcome.reason == "code 404 != 200 at line 2"


def test_failed_when_find_misses(web):
    outcome = run(f'go {web.url()}\ncode 200\nfind "Breaking News"')
    assert (outcome.status, outcome.failed_line) == ("failed", 3)
    assert outcome.reason == "no match to 'Breaking News' at line 3"


def test_failed_when_not_find_matches(web):
    outcome = run(f'go {web.url()}\nnot_find "Latest News"')
    assert (outcome.status, outcome.failed_line) == ("failed", 2)
    assert outcome.reason == "match to 'Latest News' at line 2"


def test_error_when_the_connection_is_refused():
    port = closed_port()
    outcome = run(f"go http://127.0.0.1:{port}/\ncode 200")
    assert (outcome.status, outcome.failed_line) == ("error", 1)
    assert outcome.reason == f"connection refused by 127.0.0.1:{port} at line 1"


def test_error_when_dns_lookup_fails():
    outcome = run("go http://foo.invalid/\ncode 200")
    assert (outcome.status, outcome.failed_line) == ("error", 1)
    assert outcome.reason == "DNS lookup failed for foo.invalid at line 1"


def test_timeout_from_the_soft_alarm_while_a_slow_page_loads(web):
    web.route("/slow", delay=3)
    outcome = run(f"go {web.url()}\ngo {web.url('/slow')}\ncode 200", timeout=1, request_timeout=30)
    assert (outcome.status, outcome.failed_line) == ("timeout", 2)
    assert outcome.reason == "timed out after 1 s at line 2"


def test_timeout_from_the_soft_alarm_during_sleep():
    outcome = run("echo start\nsleep 30", timeout=1)
    assert (outcome.status, outcome.failed_line) == ("timeout", 2)


def test_timeout_from_the_request_timeout(web):
    web.route("/slow", delay=2)
    outcome = run(f"go {web.url('/slow')}", timeout=30, request_timeout=0.5)
    assert (outcome.status, outcome.failed_line) == ("timeout", 1)
    assert outcome.reason == "request timed out after 0.5 s at line 1"


def test_the_timeout_command_sets_the_request_timeout(web):
    web.route("/slow", delay=2)
    outcome = run(f"timeout 0.5\ngo {web.url('/slow')}", timeout=30, request_timeout=30)
    assert outcome.reason == "request timed out after 0.5 s at line 2"


def test_exit_0_ends_the_script_early_as_a_pass(web):
    outcome = run(f'go {web.url()}\nexit 0\nfind "never there"')
    assert (outcome.status, outcome.failed_line, outcome.reason) == ("passed", None, "")
    assert "exit 0: script ended early" in outcome.log


def test_exit_without_a_code_is_exit_0(web):
    assert run(f"go {web.url()}\nexit\ngo http://foo.invalid/").status == "passed"


def test_exit_n_fails_and_says_so(web):
    outcome = run(f"go {web.url()}\nexit 3\ncode 200")
    assert (outcome.status, outcome.failed_line) == ("failed", 2)
    assert outcome.reason == "script exited with code 3 at line 2"


def test_exit_with_a_word_is_an_error():
    outcome = run("exit soon")
    assert outcome.status == "error"
    assert "exit code must be a number" in outcome.reason


def test_python_systemexit_from_unsafe_run_ends_the_check_not_the_process():
    outcome = run('echo before\nrun "raise SystemExit(4)"\necho after', safe=False)
    assert (outcome.status, outcome.failed_line) == ("failed", 2)
    assert outcome.reason == "script exited with code 4 at line 2"
    assert "after" not in outcome.log


def test_a_missing_form_fails_with_its_line(web):
    outcome = run(f"go {web.url()}\nfv 1 username x")
    assert (outcome.status, outcome.failed_line) == ("failed", 2)
    assert outcome.reason == "Form not found at line 2"


# -- forms, links, variables -----------------------------------------------------

LOGIN = """<html><body>
<a href="/about">About us</a>
<form method="post" action="/login"><input name="user"><input type="password" name="password">
<input type="submit" value="Log in"></form></body></html>"""


def test_forms_links_and_variables_work_in_safe_mode(web):
    web.route("/", body=LOGIN)
    web.route("/login", body="<html><body>Welcome back</body></html>")
    web.route("/about", body="<html><body>About Kong</body></html>")
    text = f"""set_global base {web.url()}
go $base
fv 1 user alice
fv 1 password ${{pw}}
submit
code 200
find "Welcome back"
go ${{base}}
follow "About us"
url /about$
find "About (\\w+)"
echo matched __match__"""
    outcome = run(text.replace("${pw}", "s3cr3t"))
    assert outcome.status == "passed", outcome.reason + outcome.log
    assert web.posts == [("/login", {"user": ["alice"], "password": ["s3cr3t"]})]
    assert "matched Kong" in outcome.log


def test_secrets_are_masked_in_the_log_and_the_reason(web):
    web.route("/", body=LOGIN.replace('method="post"', 'method="get"'))
    web.route("/login", body="<html><body>Hello</body></html>")
    secret = "s3cr3t pass!"
    text = f'go {web.url()}\nfv 1 user alice\nfv 1 password "{secret}"\nsubmit\necho "{secret}"\nfind "{secret}"'
    outcome = run(text, secrets=(secret,))
    assert outcome.status == "failed"
    assert web.requests_to("/login")[0].query == {"user": ["alice"], "password": [secret]}
    assert secret not in outcome.log
    assert "s3cr3t+pass%21" not in outcome.log  # the submitted URL, as httpx encodes it
    assert MASK in outcome.log
    assert outcome.reason == f"no match to '{MASK}' at line 6"


# -- isolation between runs ------------------------------------------------------


def test_consecutive_runs_do_not_share_log_variables_cookies_headers_or_auth(web):
    web.route("/login", headers={"Set-Cookie": "sessionid=abc123; Path=/"})
    first = run(
        f"set_global who alice\nadd_extra_header X-Kong first-run\nadd_auth realm {web.url()} u p\n"
        f"go {web.url('/login')}\ngo {web.url()}\necho hello $who"
    )
    assert first.status == "passed"
    assert "hello alice" in first.log
    assert web.requests_to("/")[0].headers["cookie"] == "sessionid=abc123"
    assert web.requests_to("/")[0].headers["x-kong"] == "first-run"

    second = run(f"go {web.url()}\necho hello $who")
    assert second.status == "passed"
    assert "hello $who" in second.log  # the variable is gone
    assert "first-run" not in second.log
    assert "alice" not in second.log
    last = web.requests_to("/")[-1]
    assert "cookie" not in last.headers
    assert "x-kong" not in last.headers
    assert "authorization" not in last.headers


def test_a_check_starts_without_a_page(web):
    run(f"go {web.url()}")
    outcome = run("find 'Latest News'")
    assert outcome.status == "error"  # no page: the previous run's browser is gone


def test_twill_output_never_reaches_stdout(web, capsys):
    run(f"go {web.url()}\necho visible-in-the-log-only\nshow_cookies")
    captured = capsys.readouterr()
    assert "visible-in-the-log-only" not in captured.out + captured.err


def test_unsafe_redirect_output_is_undone_after_the_check(web, tmp_path):
    stdout = sys.stdout
    target = tmp_path / "out.txt"
    outcome = run(f"redirect_output {target}\ngo {web.url()}\necho redirected", safe=False)
    assert outcome.status == "passed"
    assert sys.stdout is stdout
    later = run("echo captured-again")
    assert "captured-again" in later.log
    assert "captured-again" not in target.read_text()


def test_unsafe_extend_with_commands_do_not_outlive_the_check(web):
    outcome = run("extend_with os\nrun \"import os\"", safe=False)
    assert outcome.status == "passed"
    with pytest.raises(Exception, match="unknown twill command 'getcwd'"):
        validate("getcwd", safe=False)


def test_the_log_is_truncated_in_the_middle_for_huge_pages(web):
    web.route("/", body="<html><body>" + "x" * (runner.MAX_LOG_CHARS * 2) + "</body></html>")
    outcome = run(f"go {web.url()}\nshow")
    assert len(outcome.log) < runner.MAX_LOG_CHARS + 200
    assert "characters cut" in outcome.log


# -- safe mode at run time -------------------------------------------------------


def test_executes_the_validated_steps_not_the_source_text(web):
    script = Script(
        source="go http://foo.invalid/\ncode 500",
        steps=(Step(1, "go", (web.url(),)), Step(2, "code", ("200",))),
    )
    outcome = runner.execute(Job(key=1, label="x", script=script, timeout=10, request_timeout=5))
    assert outcome.status == "passed"
    assert web.hits == {"/": 1}


def test_a_variable_cannot_expand_to_a_non_http_url():
    outcome = run("set_global target javascript:alert(1)\ngo $target")
    assert (outcome.status, outcome.failed_line) == ("error", 2)
    assert "only http(s) URLs are allowed, not javascript" in outcome.reason


def test_a_variable_cannot_expand_to_a_scheme_that_looks_like_a_host_and_port():
    outcome = run("set_global target file:0/etc/passwd\ngo $target")
    assert (outcome.status, outcome.failed_line) == ("error", 2)
    assert "only http(s) URLs are allowed, not file" in outcome.reason


# -- the page size limit -----------------------------------------------------------


def test_a_gzip_bomb_ends_as_an_error_at_the_limit_without_decoding_the_rest(web):
    web.route("/bomb", payload=gzip_bomb(150 * 1024 * 1024), headers={"Content-Encoding": "gzip"})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcome = run(f"go {web.url('/bomb')}\nfind never", max_page_bytes=1024 * 1024)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert (outcome.status, outcome.failed_line) == ("error", 1)
    assert re.fullmatch(rf"page larger than the 1 MiB limit \(read 1\.[0-2] MiB of {web.url('/bomb')}\) at line 1",
                        outcome.reason), outcome.reason  # fmt: skip
    assert grown_kib < 64 * 1024, grown_kib  # decoding it all took 150 MiB


def test_a_plain_page_over_the_limit_ends_as_an_error(web):
    web.route("/big", payload=b"x" * 300_000)
    outcome = run(f"go {web.url('/big')}", max_page_bytes=100_000)
    assert outcome.status == "error"
    assert outcome.reason.startswith("page larger than the 97.6562 KiB limit (read ")


def test_a_page_within_the_limit_decodes_as_usual(web):
    web.route("/zipped", payload=gzipped("<html><title>Zipped</title><p>Latest News</p></html>"),
              headers={"Content-Encoding": "gzip"})  # fmt: skip
    outcome = run(f"go {web.url('/zipped')}\ntitle Zipped\nfind 'Latest News'", max_page_bytes=1024)
    assert outcome.status == "passed", outcome.reason


@override_settings(KONG_MAX_PAGE_BYTES=2048)
def test_the_limit_defaults_to_the_setting(web):
    web.route("/big", body="x" * 4096)
    assert runner.page_limit(job("echo x")) == 2048
    outcome = run(f"go {web.url('/big')}")
    assert re.fullmatch(rf"page larger than the 2 KiB limit \(read 4\.0 KiB of {web.url('/big')}\) at line 1",
                        outcome.reason), outcome.reason  # fmt: skip


def test_a_redirect_body_counts_too(web):
    web.route("/moved", status=302, payload=gzip_bomb(8 * 1024 * 1024),
              headers={"Content-Encoding": "gzip", "Location": "/"})  # fmt: skip
    outcome = run(f"go {web.url('/moved')}", max_page_bytes=1024 * 1024)
    assert outcome.status == "error"
    assert "page larger than the 1 MiB limit" in outcome.reason


# -- the WSGI transport ----------------------------------------------------------


def hello_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    status = "200 OK" if environ["PATH_INFO"] == "/" else "404 Not Found"
    start_response(status, [("Content-Type", "text/html")])
    return [f"<html><body>Hello {environ['HTTP_HOST']}</body></html>".encode()]


def test_runs_in_process_against_a_wsgi_app():
    outcome = runner.execute(job("go http://ljworld.example/\ncode 200\nfind 'Hello ljworld.example'"), app=hello_app)
    assert outcome.status == "passed", outcome.log
    missing = runner.execute(job("go http://ljworld.example/missing\ncode 200"), app=hello_app)
    assert missing.reason == "code 404 != 200 at line 2"


@pytest.mark.django_db
def test_runs_against_a_django_project_through_the_wsgi_transport():
    from django.core.wsgi import get_wsgi_application

    outcome = runner.execute(
        job("go http://testserver/admin/login/\ncode 200\nfind 'csrfmiddlewaretoken'\nfv 1 username nobody"),
        app=get_wsgi_application(),
    )
    assert outcome.status == "passed", outcome.log


# -- threads -------------------------------------------------------------------


def test_outside_the_main_thread_the_deadline_is_checked_between_steps():
    outcomes: list[Outcome] = []
    thread = threading.Thread(target=lambda: outcomes.append(run("sleep 0.6\nsleep 0.6\necho done", timeout=0.5)))
    thread.start()
    thread.join()
    # Line 2 never ran: the check names the last line that did.
    assert (outcomes[0].status, outcomes[0].failed_line) == ("timeout", 1)
    assert outcomes[0].reason == "timed out after 0.5 s, after line 1"
    assert ">> 2:" not in outcomes[0].log


def test_a_timeout_before_any_line_ran_names_no_line():
    outcomes: list[Outcome] = []
    thread = threading.Thread(target=lambda: outcomes.append(run("echo never", timeout=1e-9)))
    thread.start()
    thread.join()
    assert (outcomes[0].status, outcomes[0].failed_line, outcomes[0].reason) == ("timeout", None, "timed out after 1e-09 s")


def test_concurrent_threads_do_not_corrupt_each_other(web):
    web.route("/a", body="<html><body>page A</body></html>", delay=0.2)
    web.route("/b", body="<html><body>page B</body></html>", delay=0.2)
    results: dict[str, Outcome] = {}

    def check(name: str) -> None:
        text = f"set_global mine {name}\ngo {web.url('/' + name)}\nfind 'page {name.upper()}'\necho mine=${{mine}}"
        results[name] = run(text)

    threads = [threading.Thread(target=check, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, other in (("a", "b"), ("b", "a")):
        assert results[name].status == "passed"
        assert f"mine={name}" in results[name].log
        assert f"/{other}" not in results[name].log


# -- the worker pool -------------------------------------------------------------


def fleet_jobs(web: FakeSite) -> list[Job]:
    web.route("/gone", status=404)
    return [
        job(f"go {web.url()}\nfind 'Latest News'", key="pass"),
        job(f"go {web.url('/gone')}\ncode 200", key="code"),
        job(f"go {web.url()}\nfind Missing", key="find"),
        job(f"go http://127.0.0.1:{closed_port()}/", key="refused"),
        job(f"go {web.url()}\nexit 3", key="exit"),
        job(f"set_global x 1\nadd_extra_header X-Leak yes\ngo {web.url()}\necho $x", key="state"),
        job(f"go {web.url()}\necho $x\nshow_extra_headers", key="clean"),
    ]


def summary(outcome: Outcome) -> tuple[str, int | None, str]:
    return outcome.status, outcome.failed_line, outcome.reason


def test_the_pool_gives_the_same_results_as_running_inline(web):
    jobs = fleet_jobs(web)
    inline = {item.key: summary(outcome) for item, outcome in pool.run_jobs(jobs, 0)}
    pooled = {item.key: outcome for item, outcome in pool.run_jobs(jobs, 3)}
    assert {key: summary(outcome) for key, outcome in pooled.items()} == inline
    assert inline["pass"][0] == "passed"
    assert inline["code"] == ("failed", 2, "code 404 != 200 at line 2")
    assert inline["refused"][0] == "error"
    assert inline["clean"][0] == "passed"
    assert "x-leak" not in pooled["clean"].log.lower()  # whichever worker ran "state" before


def test_a_worker_killed_mid_check_is_crashed_and_the_run_goes_on(web):
    with pool.WorkerPool(1, kill_grace=30) as workers:

        def kill_the_worker(request: object) -> None:
            (victim,) = [w for w in workers.workers if w.job is not None and w.job.key == "slow"]
            os.kill(victim.pid, signal.SIGKILL)

        web.route("/slow", delay=10, on_request=kill_the_worker)
        jobs = [
            job(f"go {web.url()}", key="before"),
            job(f"go {web.url('/slow')}", key="slow", timeout=60, request_timeout=60),
            job(f"go {web.url()}\nfind 'Latest News'", key="after"),
        ]
        outcomes = {item.key: outcome for item, outcome in workers.run(jobs)}
        assert workers.spawned == 2  # the dead worker was replaced
    assert outcomes["before"].status == "passed"
    assert outcomes["slow"].status == "crashed"
    assert outcomes["slow"].reason == "the worker process was killed by SIGKILL while running the check"
    assert outcomes["after"].status == "passed"


def test_a_check_that_ignores_the_soft_alarm_is_hard_killed_as_a_timeout(web):
    ignore_alarm = 'run "import signal; signal.signal(signal.SIGALRM, signal.SIG_IGN)"\nsleep 30'
    with pool.WorkerPool(1, kill_grace=0.5) as workers:
        jobs = [
            job(ignore_alarm, key="stubborn", safe=False, timeout=1),
            job(f"go {web.url()}\nfind 'Latest News'", key="next"),
        ]
        outcomes = {item.key: outcome for item, outcome in workers.run(jobs)}
        assert workers.spawned == 2
    assert outcomes["stubborn"].status == "timeout"
    assert outcomes["stubborn"].reason == "timed out after 1 s; the worker was killed"
    assert outcomes["next"].status == "passed"


def test_a_worker_that_exits_is_crashed_and_replaced(web):
    with pool.WorkerPool(1) as workers:
        jobs = [job('run "import os; os._exit(7)"', key="dies", safe=False), job(f"go {web.url()}", key="next")]
        outcomes = {item.key: outcome for item, outcome in workers.run(jobs)}
    assert outcomes["dies"].status == "crashed"
    assert outcomes["dies"].reason == "the worker process exited with code 7 while running the check"
    assert outcomes["next"].status == "passed"


def test_workers_are_reused_and_retired_after_max_checks(web):
    jobs = [job(f"go {web.url()}", key=n) for n in range(5)]
    with pool.WorkerPool(1, max_checks_per_worker=2) as workers:
        outcomes = [outcome.status for _, outcome in workers.run(jobs)]
        assert workers.spawned == 3
    assert outcomes == ["passed"] * 5


def test_a_worker_forked_while_a_thread_runs_a_check_inline_is_not_stuck(web):
    """run-now runs checks inline in a web server's thread; a pool forked at
    that moment must not inherit the runner's lock held."""
    runner.warm_up()  # the pool warms up (in-process) before its first fork
    fetching = threading.Event()
    web.route("/slow", delay=1.5, on_request=lambda request: fetching.set())
    inline: list[Outcome] = []
    thread = threading.Thread(target=lambda: inline.append(run(f"go {web.url('/slow')}")))
    thread.start()
    fetching.wait()
    try:
        with pool.WorkerPool(1, kill_grace=1) as workers:
            ((_, outcome),) = list(workers.run([job(f"go {web.url()}\nfind 'Latest News'", timeout=5)]))
    finally:
        thread.join()
    assert outcome.status == "passed", outcome.reason
    assert inline[0].status == "passed"


def test_outcomes_are_plain_data():
    outcome = Outcome("failed", 1.5, "no match", failed_line=2, log="x")
    assert outcome.as_dict() == {
        "status": "failed",
        "duration_ms": 1.5,
        "reason": "no match",
        "failed_line": 2,
        "log": "x",
        "extra": {},
    }
    assert not outcome.succeeded
