"""kong/tasks.py and services/dispatch.py: scale-out on Django's Tasks framework.

The first tests run everywhere, with the framework's own Dummy and Immediate
backends (``django.tasks`` on Django 6, the ``django-tasks`` backport on 5.2).
The engine tests run real workers as subprocesses on the test database:
``db_worker`` (django-tasks-db) on PostgreSQL with ``KONG_TEST_TASKS=db``
(marker ``postgres``), and ``rqworker`` (django-tasks-rq) against the
redis-server .ci/services starts, with ``KONG_TEST_TASKS=rq`` (marker
``redis``). Their data must be committed: ``transaction=True``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta

import django
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from kong import services, tasks
from kong.models import Check, Location, TestResult
from kong.scheduler import Scheduler
from kong.services import dispatch
from tests.factories import make_site, make_test, make_type
from tests.test_due import ROOT, manage_env

FRAMEWORK = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"
ENGINE = os.environ.get("KONG_TEST_TASKS", "")
ON_POSTGRES = os.environ.get("KONG_TEST_DATABASE") == "postgres"
YEARLY = "0 0 1 1 *"  # a check that ran is not due again during the test


def backend(kind: str, queues: list[str] | None = None) -> dict[str, dict[str, object]]:
    """A TASKS setting with the framework's own ``dummy`` or ``immediate`` backend."""
    name = {"dummy": "DummyBackend", "immediate": "ImmediateBackend"}[kind]
    return {"default": {"BACKEND": f"{FRAMEWORK}.backends.{kind}.{name}", "QUEUES": queues or []}}


def stored_tasks() -> list[object]:
    """What the Dummy backend was handed."""
    from importlib import import_module

    return list(import_module(FRAMEWORK).task_backends["default"].results)


def make_location(slug: str) -> Location:
    return Location.objects.create(name=slug.upper(), slug=slug)


def fleet(web, sites: int, *, location: Location | None = None, prefix: str = "site") -> None:
    news = make_type(f"{prefix}-type")
    for number in range(sites):
        site = make_site(f"{prefix}{number}", web.host, type=news)
        if location is not None:
            site.locations.set([location])
    make_test(f"{prefix}-front", body='go {{ site.url }}\ncode 200\nfind "Latest News"', types=[news], schedule=YEARLY)
    services.sync_checks()


def enqueue(*args: str, capsys) -> dict[str, object]:
    call_command("check_sites", "--enqueue", "--format", "json", *args)
    return json.loads(capsys.readouterr().out)


# -- the framework's own backends: everywhere ------------------------------------


def test_kong_declares_its_tasks_on_the_engines_default_queue():
    assert tasks.run_checks_task.module_path == "kong.tasks.run_checks_task"
    assert tasks.run_checks_task.queue_name == "default"  # accepted with no TASKS setting
    assert tasks.run_checks_task.takes_context
    assert tasks.run_checks_task.priority == 0


@pytest.mark.django_db(transaction=True)
def test_enqueue_claims_and_enqueues_batches_per_queue_after_commit(web, capsys):
    eu = make_location("eu")
    fleet(web, 45)
    fleet(web, 3, location=eu, prefix="abroad")
    with override_settings(TASKS=backend("dummy")):
        data = enqueue("--due", capsys=capsys)
        queued = stored_tasks()
    assert data == {"enqueued": 48, "tasks": 4, "queues": {"kong": 45, "kong-eu": 3}}
    assert sorted(len(result.args[0]) for result in queued) == [3, 5, 20, 20]
    assert Counter(result.task.queue_name for result in queued) == {"kong": 3, "kong-eu": 1}
    assert all(result.task.priority == 0 for result in queued)
    # Each batch holds its own claim, so a worker that dies holds only its batch.
    tokens = {result.args[1] for result in queued}
    assert len(tokens) == 4
    for result in queued:
        ids, token = result.args
        assert set(Check.objects.filter(claim_token=token).values_list("pk", flat=True)) == set(ids)
    assert not Check.objects.due().exists()
    assert TestResult.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_claim_never_becomes_a_task(web):
    fleet(web, 3)
    def claim_then_die() -> None:
        with transaction.atomic():
            services.enqueue_checks(Check.objects.all(), tasks.run_checks_task, due=True)
            raise RuntimeError("the run dies before it commits")

    with override_settings(TASKS=backend("dummy")):
        with pytest.raises(RuntimeError):
            claim_then_die()
        assert stored_tasks() == []
    assert Check.objects.due().count() == 3  # nothing claimed either


@pytest.mark.django_db(transaction=True)
def test_a_batch_the_engine_refuses_is_released_and_the_command_exits_3(web):
    mars = make_location("mars")
    fleet(web, 2)
    fleet(web, 2, location=mars, prefix="far")
    with (
        override_settings(TASKS=backend("dummy", ["default", "kong"])),
        pytest.raises(CommandError, match="could not enqueue 2 checks to queue 'kong-mars'"),
    ):
        call_command("check_sites", "--enqueue", "--due")
    assert set(Check.objects.due().values_list("location__slug", flat=True)) == {"mars"}  # due again at once


@pytest.mark.django_db(transaction=True)
def test_enqueue_without_due_claims_the_selection_but_not_what_a_run_holds(web, capsys):
    fleet(web, 3)
    Check.objects.update(next_due_at=timezone.now() + timedelta(days=1))  # none due
    held = Check.objects.order_by("pk").first()
    services.claim_checks([held.pk], token="another-run")
    with override_settings(TASKS=backend("dummy")):
        assert enqueue(capsys=capsys) == {"enqueued": 2, "tasks": 1, "queues": {"kong": 2}}
        assert enqueue("--due", capsys=capsys) == {"enqueued": 0, "tasks": 0, "queues": {}}


@pytest.mark.django_db(transaction=True)
def test_the_tasks_executor_makes_due_runs_enqueue(web, capsys):
    fleet(web, 2)
    with (
        override_settings(TASKS=backend("dummy"), KONG_EXECUTOR="tasks"),
    ):
        call_command("check_sites", "--due")
        assert capsys.readouterr().out == "enqueued 2 checks in 1 tasks: 2 to kong\n"
        call_command("check_sites", "--due", "--quiet")
        assert capsys.readouterr().out == ""
    assert TestResult.objects.count() == 0


@pytest.mark.django_db
def test_a_pool_due_run_leaves_other_locations_checks_for_their_queues(web):
    eu = make_location("eu")
    fleet(web, 2)
    fleet(web, 1, location=eu, prefix="abroad")
    call_command("check_sites", "--due", "--workers", "0", "--quiet")
    assert set(TestResult.objects.values_list("location", flat=True)) == {None}
    assert list(Check.objects.due().values_list("location__slug", flat=True)) == ["eu"]
    call_command("check_sites", "--due", "--location", "eu", "--workers", "0", "--quiet")  # e.g. on a host in eu
    assert TestResult.objects.filter(location=eu).count() == 1


@pytest.mark.django_db
def test_the_task_runs_only_what_its_claim_still_holds_and_names_its_worker(web):
    fleet(web, 2)
    first, second = Check.objects.order_by("pk")
    services.claim_checks([first.pk, second.pk], token="old")
    Check.objects.filter(pk=second.pk).update(claim_token="taken-over")  # the lease expired; another run took it
    with override_settings(TASKS=backend("immediate")):
        result = tasks.run_checks_task.enqueue([first.pk, second.pk], "old")
    assert result.return_value["ran"] == 1
    assert result.return_value["skipped"] == 1
    assert result.return_value["statuses"] == {"passed": 1}
    recorded = TestResult.objects.get()
    assert recorded.site_id == first.site_id
    assert recorded.worker == result.worker_ids[-1]
    assert Check.objects.get(pk=second.pk).claim_token == "taken-over"  # left alone


@pytest.mark.django_db
def test_the_one_check_task_still_works(web):
    fleet(web, 1)
    with override_settings(TASKS=backend("immediate")):
        result = tasks.run_check_task.enqueue(Check.objects.get().pk)
    assert result.return_value["status"] == "passed"
    assert TestResult.objects.get().pk == result.return_value["result_id"]


@pytest.mark.django_db(transaction=True)
def test_the_scheduler_with_the_task_enqueues_due_checks_and_runs_nothing_here(web):
    fleet(web, 3)
    scheduler = Scheduler(1, prune=False, task=tasks.run_checks_task)
    try:
        with override_settings(TASKS=backend("dummy")):
            assert scheduler.tick() == []
            assert scheduler.enqueued.as_json() == {"enqueued": 3, "tasks": 1, "queues": {"kong": 3}}
            scheduler.tick()
            assert scheduler.enqueued.enqueued == 0  # claimed: not enqueued twice
        assert scheduler.pool.in_flight == 0
    finally:
        scheduler.shutdown(0)


@pytest.mark.django_db
def test_enqueue_without_a_framework_says_how_to_get_one(web):
    fleet(web, 1)
    with pytest.raises(services.KongError, match=r"django-kong\[tasks\]"):
        services.enqueue_checks(Check.objects.all(), None, due=True)


def test_the_framework_is_imported_from_django_first():
    assert dispatch.tasks_framework().__name__ == FRAMEWORK


# -- real engines: workers as subprocesses on the test database -----------------


def start_manage(*args: str, **env: str) -> subprocess.Popen[str]:
    """A ``python -m django`` process on the test database; its output goes
    to a file (``.log``), so a worker that logs much never blocks on a pipe."""
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by output())
    process = subprocess.Popen(
        [sys.executable, "-m", "django", *args, "--settings=tests.settings"],
        cwd=ROOT,
        env={**manage_env(), **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    process.log = log  # type: ignore[attr-defined]
    return process


def output(process: subprocess.Popen[str]) -> str:
    process.wait()
    log = process.log  # type: ignore[attr-defined]
    log.seek(0)
    text = log.read()
    log.close()
    return text


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    process = start_manage(*args, **env)
    text = output(process)
    return subprocess.CompletedProcess(process.args, process.returncode, text, "")


def db_worker(worker_id: str, queue: str = "kong", *, batch: bool = True) -> subprocess.Popen[str]:
    args = ["db_worker", "--queue-name", queue, "--worker-id", worker_id, "--no-reload", "--no-startup-delay"]
    return start_manage(*args, *(["--batch"] if batch else []), "--interval", "0.2")


def rq_worker(name: str, queue: str = "kong") -> subprocess.Popen[str]:
    return start_manage("rqworker", queue, "--job-class", "django_tasks_rq.Job", "--burst", "--name", name)


def finish(workers: list[subprocess.Popen[str]]) -> str:
    """Wait for burst/batch workers to drain their queues and exit; their output."""
    outputs = [output(worker) for worker in workers]
    for worker, text in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, text
    return "\n".join(outputs)


def wait_for(condition, *, stalled: float = 600, progress=lambda: TestResult.objects.count()) -> None:
    """Poll until ``condition()``; fail only when nothing progresses for
    ``stalled`` seconds (a shared machine can be slow; it must not hang)."""
    last, since = progress(), time.monotonic()
    while not condition():
        time.sleep(0.2)
        now = progress()
        if now != last:
            last, since = now, time.monotonic()
        assert time.monotonic() - since < stalled, "no progress"


def assert_each_check_recorded_once(expected: int) -> None:
    per_check = Counter(TestResult.objects.values_list("test_id", "site_id", "location_id"))
    assert len(per_check) == expected
    assert set(per_check.values()) == {1}
    assert set(TestResult.objects.values_list("status", flat=True)) == {"passed"}
    assert not Check.objects.exclude(claim_token="").exists()


needs_db_engine = pytest.mark.skipif(
    ENGINE != "db" or not ON_POSTGRES, reason="needs KONG_TEST_TASKS=db KONG_TEST_DATABASE=postgres (.ci/test-all)"
)
needs_rq_engine = pytest.mark.skipif(ENGINE != "rq", reason="needs KONG_TEST_TASKS=rq and redis (.ci/test-all)")


@pytest.mark.postgres
@pytest.mark.engine
@needs_db_engine
@pytest.mark.django_db(transaction=True)
def test_three_db_workers_run_200_checks_exactly_once(web):
    from django_tasks_db.models import DBTaskResult

    web.route("/", delay=0.2)
    fleet(web, 200)
    enqueued = run_manage("check_sites", "--due", "--enqueue", "--format", "json")
    assert enqueued.returncode == 0, enqueued.stdout
    assert json.loads(enqueued.stdout.splitlines()[-1]) == {"enqueued": 200, "tasks": 10, "queues": {"kong": 200}}

    finish([db_worker(f"w{number}") for number in range(3)])

    assert_each_check_recorded_once(200)
    assert len(set(TestResult.objects.values_list("worker", flat=True))) >= 2
    assert set(TestResult.objects.values_list("worker", flat=True)) <= {"w0", "w1", "w2"}
    assert set(DBTaskResult.objects.values_list("status", flat=True)) == {"SUCCESSFUL"}


@pytest.mark.postgres
@pytest.mark.engine
@needs_db_engine
@pytest.mark.django_db(transaction=True)
def test_a_db_worker_killed_mid_batch_loses_nothing(web):
    from django_tasks_db.models import DBTaskResult

    web.route("/", delay=0.5)
    fleet(web, 60)
    lease = {"KONG_TEST_CLAIM_LEASE": "4"}
    assert run_manage("check_sites", "--due", "--enqueue", **lease).returncode == 0
    doomed = db_worker("doomed", batch=False)
    # Mid-batch: its task is running and has recorded some of its checks, not all.
    wait_for(lambda: TestResult.objects.filter(worker="doomed").count() >= 2)
    doomed.send_signal(signal.SIGKILL)
    output(doomed)
    killed = DBTaskResult.objects.get(worker_ids__contains=["doomed"])
    assert killed.status == "RUNNING"  # and so it stays: db_worker has no reaper
    lost = list(Check.objects.filter(pk__in=killed.args_kwargs["args"][0], last_result__isnull=True))
    assert lost, "the worker was killed after its batch ended"

    finish([db_worker("w1"), db_worker("w2")])  # the other batches
    assert TestResult.objects.count() == 60 - len(lost)
    # After the lease, the next --due run claims the lost checks again.
    wait_for(lambda: Check.objects.due().count() == len(lost), progress=lambda: Check.objects.due().count())
    again = run_manage("check_sites", "--due", "--enqueue", "--format", "json", **lease)
    assert json.loads(again.stdout.splitlines()[-1])["enqueued"] == len(lost)
    finish([db_worker("w3")])

    assert_each_check_recorded_once(60)
    DBTaskResult.objects.filter(pk=killed.pk).update(started_at=timezone.now() - timedelta(hours=2))
    call_command("kong_prune", "--quiet")  # the stale RUNNING row is marked failed
    assert DBTaskResult.objects.get(pk=killed.pk).status == "FAILED"


@pytest.mark.postgres
@pytest.mark.engine
@needs_db_engine
@pytest.mark.django_db(transaction=True)
def test_workers_on_two_queues_run_only_their_own_locations_checks(web):
    from django_tasks_db.models import DBTaskResult

    eu, us = make_location("eu"), make_location("us")
    fleet(web, 6, location=eu, prefix="eu")
    fleet(web, 4, location=us, prefix="us")
    fleet(web, 2, prefix="home")  # the default queue: no worker here serves it
    enqueued = run_manage("check_sites", "--due", "--enqueue", "--format", "json")
    assert json.loads(enqueued.stdout.splitlines()[-1])["queues"] == {"kong": 2, "kong-eu": 6, "kong-us": 4}

    finish([db_worker("eu-1", "kong-eu"), db_worker("us-1", "kong-us")])

    ran = set(TestResult.objects.values_list("location__slug", "worker", "site__slug"))
    assert {(where, worker) for where, worker, _ in ran} == {("eu", "eu-1"), ("us", "us-1")}
    assert all(site.startswith(where) for where, _, site in ran)
    assert TestResult.objects.count() == 10
    assert DBTaskResult.objects.filter(queue_name="kong", status="READY").count() == 1  # waits for its worker


@pytest.mark.redis
@pytest.mark.engine
@needs_rq_engine
@pytest.mark.django_db(transaction=True)
def test_rq_workers_run_checks_exactly_once(web):
    import django_rq

    for name in ("kong", "kong-eu"):
        django_rq.get_queue(name).empty()
    web.route("/", delay=0.2)
    fleet(web, 200)
    enqueued = run_manage("check_sites", "--due", "--enqueue", "--format", "json")
    assert json.loads(enqueued.stdout.splitlines()[-1]) == {"enqueued": 200, "tasks": 10, "queues": {"kong": 200}}

    names = [f"rq{number}-{os.getpid()}" for number in range(3)]
    finish([rq_worker(name) for name in names])

    assert_each_check_recorded_once(200)
    workers = set(TestResult.objects.values_list("worker", flat=True))
    assert len(workers) >= 2
    assert workers <= set(names)
