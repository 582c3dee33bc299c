"""kong/migrations: an inventory and its history made at 0001_initial survive
an upgrade to the latest migration, whatever migrations come after.

The test migrates Kong back to 0001_initial, writes rows through the
historical models, migrates forward to the leaf node (not a name: new
migrations must pass without touching this file), then reads everything
back. Columns added since 0001 must hold their declared defaults.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from django.apps.registry import Apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import NOT_PROVIDED, Field

from kong import models

INITIAL = ("kong", "0001_initial")
ON_POSTGRES = os.environ.get("KONG_TEST_DATABASE") == "postgres"
RUN_DATE = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


def leaf() -> tuple[str, str]:
    (node,) = MigrationExecutor(connection).loader.graph.leaf_nodes("kong")
    return node


def migrate(target: tuple[str, str]) -> Apps:
    """Migrate Kong to ``target``; returns the historical models there."""
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    executor.loader.build_graph()  # see what was just applied
    return executor.loader.project_state(target).apps


@pytest.fixture
def at_initial() -> Iterator[Apps]:
    """Kong at 0001_initial; migrated back to the latest whatever happens,
    so the rest of the run finds the schema it expects."""
    try:
        yield migrate(INITIAL)
    finally:
        migrate(leaf())


def write_history(old: Apps) -> dict[str, Any]:
    """One of each row, through 0001's own models; returns their pks."""
    server = old.get_model("kong", "Server").objects.create(
        name="Web 1", slug="web1", hostname="web1.example.com", internal_ip="10.0.0.1"
    )
    news = old.get_model("kong", "Type").objects.create(name="News", slug="news", description="Papers")
    site = old.get_model("kong", "Site").objects.create(
        name="LJWorld",
        slug="ljworld",
        servername="www.ljworld.com",
        type=news,
        variables={"section": "news", "API_TOKEN": "s3cret"},
    )
    site.servers.add(server)
    test = old.get_model("kong", "Test").objects.create(
        name="Front page",
        slug="front-page",
        body="go {{ site.url }}\ncode 200",
        schedule="*/5 * * * *",
        timeout=30,
    )
    test.sites.add(site)
    test.types.add(news)
    result = old.get_model("kong", "TestResult").objects.create(
        test=test,
        site=site,
        server=server,
        run_date=RUN_DATE,
        duration=812.5,
        succeeded=False,
        status="failed",
        reason="code 200 expected, got 500",
        content="==> at http://www.ljworld.com",
        failed_line=2,
    )
    check = old.get_model("kong", "Check").objects.create(
        test=test,
        site=site,
        status="failed",
        status_since=RUN_DATE,
        last_result=result,
        last_run_at=RUN_DATE,
        consecutive_failures=3,
        next_due_at=RUN_DATE,
    )
    return {
        "server": server.pk,
        "type": news.pk,
        "site": site.pk,
        "test": test.pk,
        "result": result.pk,
        "check": check.pk,
    }


def assert_history_survived(pks: dict[str, Any]) -> None:
    """Read back through today's models, relations included."""
    site = models.Site.objects.get(pk=pks["site"])
    assert (site.slug, site.url, site.type.slug) == ("ljworld", "http://www.ljworld.com", "news")
    assert site.variables == {"section": "news", "API_TOKEN": "s3cret"}
    assert [server.slug for server in site.servers.all()] == ["web1"]
    assert str(models.Server.objects.get(pk=pks["server"]).internal_ip) == "10.0.0.1"
    test = models.Test.objects.get(pk=pks["test"])
    assert (test.schedule, test.timeout, test.is_active) == ("*/5 * * * *", 30, True)
    assert list(test.sites.all()) == [site]
    assert [kind.slug for kind in test.types.all()] == ["news"]
    result = models.TestResult.objects.get(pk=pks["result"])
    assert (result.test, result.site, result.server_id) == (test, site, pks["server"])
    assert (result.status, result.succeeded, result.duration, result.failed_line) == (
        "failed",
        False,
        812.5,
        2,
    )
    assert result.run_date == RUN_DATE
    check = models.Check.objects.get(pk=pks["check"])
    assert (check.last_result, check.consecutive_failures, check.status) == (result, 3, "failed")
    assert check.next_due_at == RUN_DATE


def added_fields(old: Apps, new: Apps) -> Iterator[tuple[str, Field[Any, Any]]]:
    """(model name, field) for each concrete column added to a model that 0001 had."""
    for model in old.get_app_config("kong").get_models():
        before = {field.name for field in model._meta.concrete_fields}
        for field in new.get_model("kong", model.__name__)._meta.concrete_fields:
            if field.name not in before:
                yield model.__name__, field


def assert_added_columns_hold_their_defaults(old: Apps, new: Apps) -> None:
    for name, field in added_fields(old, new):
        for value in new.get_model("kong", name).objects.values_list(field.attname, flat=True):
            where = f"{name}.{field.name} on a row from before it existed"
            if field.default is NOT_PROVIDED and field.null:
                assert value is None, where
            elif field.default is NOT_PROVIDED or callable(field.default):
                assert value is not None, where  # a one-off default, or one computed per row
            else:
                assert value == field.default, where


def upgrade_keeps_the_data(at_initial: Apps) -> None:
    pks = write_history(at_initial)
    latest = migrate(leaf())
    assert_history_survived(pks)
    assert_added_columns_hold_their_defaults(at_initial, latest)


@pytest.mark.django_db(transaction=True)  # migrations run DDL: no test transaction around them
def test_an_upgrade_from_0001_keeps_every_row(at_initial):
    upgrade_keeps_the_data(at_initial)


@pytest.mark.postgres
@pytest.mark.skipif(not ON_POSTGRES, reason="needs KONG_TEST_DATABASE=postgres (.ci/test-all)")
@pytest.mark.django_db(transaction=True)
def test_an_upgrade_from_0001_keeps_every_row_on_postgresql(at_initial):
    assert connection.vendor == "postgresql"
    upgrade_keeps_the_data(at_initial)


@pytest.mark.django_db
def test_the_models_match_the_migrations():
    """A model change without its migration would make the upgrade above
    pass while production lacks the column."""
    from django.core.management import call_command

    call_command("makemigrations", "kong", "--check", "--dry-run", verbosity=0)
