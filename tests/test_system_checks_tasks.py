"""kong/system_checks.py, scale-out: kong.E020 to kong.E023 for a Django
Tasks setup that could not run Kong's checks."""

from __future__ import annotations

import django
import pytest
from django.test import override_settings

from kong.models import Location
from kong.system_checks import check_database, check_settings

FRAMEWORK = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"
DB = "django_tasks_db.DatabaseBackend"


def backend(path: str, queues: list[str] | None = None) -> dict[str, dict[str, object]]:
    settings: dict[str, object] = {"BACKEND": path}
    if queues is not None:
        settings["QUEUES"] = queues
    return {"default": settings}


def ids(**settings: object) -> list[str]:
    with override_settings(**settings):
        return [message.id for message in check_settings() if message.id and message.id >= "kong.E020"]


def test_e020_an_unknown_executor_or_tasks_with_no_backend():
    assert ids(KONG_EXECUTOR="celery") == ["kong.E020"]
    # The test settings set no TASKS: Django 6's default is the Immediate backend.
    assert ids(KONG_EXECUTOR="tasks") == ["kong.E020" if django.VERSION < (6, 0) else "kong.E021"]


def test_e021_immediate_or_dummy_where_workers_were_meant():
    immediate = f"{FRAMEWORK}.backends.immediate.ImmediateBackend"
    dummy = f"{FRAMEWORK}.backends.dummy.DummyBackend"
    assert ids(KONG_EXECUTOR="tasks", TASKS=backend(immediate)) == ["kong.E021"]
    assert ids(KONG_EXECUTOR="tasks", TASKS=backend(dummy)) == ["kong.E021"]
    assert ids(TASKS=backend(immediate)) == []  # the pool executor: fine


def test_e022_kongs_queues_must_be_in_queues():
    apps = ["django.contrib.contenttypes", "django.contrib.auth", "kong", "django_tasks_db"]
    with override_settings(INSTALLED_APPS=apps):
        assert ids(KONG_EXECUTOR="tasks", TASKS=backend(DB, ["default", "kong"])) == []
        assert ids(KONG_EXECUTOR="tasks", TASKS=backend(DB, [])) == []  # no validation
        assert ids(KONG_EXECUTOR="tasks", TASKS=backend(DB, ["kong"])) == ["kong.E022"]  # "default" missing
        assert ids(KONG_EXECUTOR="tasks", TASKS=backend(DB)) == ["kong.E022"]  # the engines' default: ["default"]
        assert ids(KONG_EXECUTOR="tasks", KONG_DEFAULT_QUEUE="x" * 40, TASKS=backend(DB, [])) == ["kong.E022"]


def test_e023_the_database_backend_needs_its_app():
    assert ids(KONG_EXECUTOR="tasks", TASKS=backend(DB, [])) == ["kong.E023"]


@pytest.mark.django_db
def test_e022_with_check_database_each_active_locations_queue():
    Location.objects.create(name="EU", slug="eu")
    Location.objects.create(name="US", slug="us", queue_name="probes-us")
    Location.objects.create(name="Old", slug="old", is_active=False)
    with override_settings(TASKS=backend(DB, ["default", "kong", "kong-eu"])):
        messages = check_database(databases=["default"])
    assert [(message.id, "probes-us" in message.msg) for message in messages] == [("kong.E022", True)]
    with override_settings(TASKS=backend(DB, [])):
        assert check_database(databases=["default"]) == []
