"""The fast paths a large run takes, and that they change nothing a user sees:
validated scripts shared per rendered text (kong.services.jobs), forking
interleaved with collecting, and workers stopped without waiting
(kong.engine.pool, kong.engine.workers)."""

from __future__ import annotations

import os
import time

import pytest
from django.test import override_settings

from kong import services
from kong.engine import pool
from kong.engine import workers as worker_process
from kong.engine.runner import Job
from kong.engine.scripts import ScriptError, compile_script, validate
from kong.models import Check
from kong.services import jobs
from tests.factories import make_site, make_test, make_type

pytestmark = pytest.mark.django_db


def checks_of(test_slug: str) -> list[Check]:
    return list(services.select_checks(tests=[test_slug]))


def fleet(body: str, sites: int = 3, **variables: str) -> list[Check]:
    kind = make_type("fleet")
    for n in range(sites):
        make_site(f"site-{n}", servername="127.0.0.1:8000", type=kind, variables=dict(variables))
    make_test("front-page", body=body, types=[kind])
    return checks_of("front-page")


def test_one_text_on_many_sites_is_validated_once_and_shared():
    jobs._validated.cache_clear()
    checks = fleet("go {{ site.url }}\ncode 200")
    scripts = [services.build_job(check).script for check in checks]
    assert all(script is scripts[0] for script in scripts)
    assert scripts[0] == compile_script(checks[0].test, checks[0].site)  # what the uncached path gives
    info = jobs._validated.cache_info()
    assert (info.misses, info.hits) == (1, len(checks) - 1)


def test_each_distinct_text_has_its_own_script():
    checks = fleet("go http://{{ site.slug }}.example.com/\ncode 200")
    sources = {services.build_job(check).script.source for check in checks}
    assert sources == {f"go http://site-{n}.example.com/\ncode 200" for n in range(3)}


def test_a_body_without_template_syntax_is_its_own_text():
    body = 'go http://127.0.0.1:8000/\nfind "{ not a tag }"'
    (check,) = fleet(body, sites=1)
    assert services.build_job(check).script == validate(body)


def test_a_template_is_still_rendered_for_every_check():
    # A body may say {% now %} or |random: only validation is shared, never a rendering.
    (check,) = fleet('go {{ site.url }}?t={% now "U.u" %}', sites=1)
    first = services.build_job(check).script.source
    time.sleep(0.01)
    assert services.build_job(check).script.source != first


def test_safe_mode_is_part_of_the_key():
    (check,) = fleet("go {{ site.url }}\nrun 'print(1)'", sites=1)
    with pytest.raises(ScriptError, match="not allowed in safe mode"):
        services.build_job(check)
    with override_settings(KONG_SAFE_MODE=False):
        assert [step.command for step in services.build_job(check).script.steps] == ["go", "run"]


def test_a_cached_refusal_is_masked_with_each_sites_own_secrets():
    kind = make_type("fleet")
    for slug, token in (("one", "s3cret-one"), ("two", "s3cret-two")):
        make_site(slug, type=kind, variables={"api_token": token})
    make_test("bad", body='go {{ site.url }}\nfind "{{ api_token }}', types=[kind])
    errors = {}
    for check in checks_of("bad"):
        with pytest.raises(ScriptError) as raised:
            services.build_job(check)
        errors[check.site.slug] = str(raised.value)
    assert "cannot parse" in errors["one"]
    assert "s3cret" not in errors["one"] + errors["two"]
    # The same text through the cache is masked just as the first time.
    (again,) = [check for check in checks_of("bad") if check.site.slug == "one"]
    with pytest.raises(ScriptError) as raised:
        services.build_job(again)
    assert str(raised.value) == errors["one"]


def test_an_invalid_script_is_still_recorded_as_an_error_once_cached():
    checks = fleet("go {{ site.url }}\nnot_a_command", sites=2)
    report = services.run_checks(checks, workers=0)
    assert [item.status for item in report.results] == ["error", "error"]
    assert all("unknown twill command" in item.reason for item in report.results)


def job(url: str, key: object) -> Job:
    return Job(key=key, label=str(key), script=validate(f"go {url}"), timeout=30, request_timeout=30)


@pytest.mark.django_db(False)
def test_the_pool_collects_a_finished_check_before_forking_on(web):
    web.route("/slow", delay=2)
    with pool.WorkerPool(4) as workers:
        workers.submit(job(web.url(), "fast"))
        (first,) = workers.workers
        while not first.conn.poll(0.05):  # its outcome waits in the pipe
            pass
        for n in range(3):
            workers.submit(job(web.url("/slow"), n))
        assert workers.spawned == 1  # nothing forked while a result waits
        finished = workers.poll(5)
        assert [item.key for item, _ in finished] == ["fast"]
        assert workers.spawned == 3  # then the forking goes on, the first worker reused
        done = finished
        while workers.in_flight:
            done += workers.poll(5)
    assert sorted(str(item.key) for item, _ in done) == ["0", "1", "2", "fast"]


@pytest.mark.django_db(False)
def test_closing_a_pool_stops_idle_workers_without_waiting_and_reaps_them_later(web):
    with pool.WorkerPool(3) as workers:
        list(workers.run([job(web.url(), n) for n in range(3)]))
        pids = [worker.pid for worker in workers.workers]
        started = time.monotonic()
    assert time.monotonic() - started < 0.5
    assert workers.workers == []
    give_up = time.monotonic() + 10
    while worker_process._stopped and time.monotonic() < give_up:
        worker_process.reap_stopped()
        time.sleep(0.02)
    assert worker_process._stopped == []
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped: no zombie left behind
