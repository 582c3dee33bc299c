"""Installing Kong as an operator does: real ``python -m django`` processes
on a fresh database, before and after ``migrate``; and the SQLite settings
the README recommends, under concurrent writers.

The Reliability rules say ``migrate``, ``check --database default`` and every
command work on a fresh, unmigrated database: a command that cannot run
exits 3 with one line, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ON_POSTGRES = os.environ.get("KONG_TEST_DATABASE") == "postgres"
HANG_GUARD = 600  # seconds: only so that a hung command fails the test instead of the whole run


@dataclass
class FreshDatabase:
    """A database nobody has migrated, and the environment that points
    ``tests.settings`` at it."""

    vendor: str
    env: dict[str, str]

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "django", *args, "--settings=tests.settings"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=HANG_GUARD,
        )


def _base_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for name in ("DJANGO_SETTINGS_MODULE", "KONG_SQLITE_PATH", "KONG_TEST_DATABASE"):
        env.pop(name, None)
    return env


def _maintenance() -> object:
    import psycopg

    return psycopg.connect(
        dbname="postgres",
        user=os.environ.get("PGUSER", "kong"),
        password=os.environ.get("PGPASSWORD", "kong"),
        host=os.environ.get("PGHOST", "127.0.0.1"),
        port=os.environ.get("PGPORT", "5432"),
        autocommit=True,
    )


@pytest.fixture
def fresh_sqlite(tmp_path: Path) -> FreshDatabase:
    return FreshDatabase("sqlite", {**_base_env(), "KONG_SQLITE_PATH": str(tmp_path / "fresh.sqlite3")})


@pytest.fixture
def fresh_postgres() -> Iterator[FreshDatabase]:
    # Named after PGDATABASE (each engineer's own), so parallel runs never collide.
    name = f"{os.environ.get('PGDATABASE', 'kong')}_install_{uuid.uuid4().hex[:8]}"
    with _maintenance() as admin:  # type: ignore[attr-defined]
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield FreshDatabase(
            "postgresql", {**_base_env(), "KONG_TEST_DATABASE": "postgres", "PGDATABASE": name}
        )
    finally:
        with _maintenance() as admin:  # type: ignore[attr-defined]
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


on_postgres = [
    pytest.mark.postgres,
    pytest.mark.skipif(not ON_POSTGRES, reason="needs KONG_TEST_DATABASE=postgres (.ci/test-all)"),
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=on_postgres)])
def fresh(request: pytest.FixtureRequest) -> FreshDatabase:
    return request.getfixturevalue(f"fresh_{request.param}")


def assert_one_clean_line(run: subprocess.CompletedProcess[str], expected: str) -> None:
    assert "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert expected in lines[0]


# -- the install path, step by step ----------------------------------------------


def test_migrate_then_check_then_check_sites_on_a_fresh_database(fresh: FreshDatabase):
    migrate = fresh.manage("migrate", "--no-input")
    assert migrate.returncode == 0, migrate.stderr
    assert "Applying kong.0001_initial... OK" in migrate.stdout
    assert "Traceback" not in migrate.stderr
    assert "kong.W011" not in migrate.stdout + migrate.stderr  # no "run migrate" while migrating

    check = fresh.manage("check", "--database", "default")
    assert check.returncode == 0, check.stderr
    assert "System check identified no issues" in check.stdout
    assert check.stderr == ""

    check_sites = fresh.manage("check_sites")
    assert check_sites.returncode == 3, check_sites.stderr
    assert check_sites.stdout == ""
    assert_one_clean_line(check_sites, "nothing to check")


def test_check_database_before_migrate_says_to_migrate(fresh: FreshDatabase):
    check = fresh.manage("check", "--database", "default")
    assert check.returncode == 0, check.stderr
    assert "Traceback" not in check.stderr
    assert "(kong.W011) Kong's tables in database 'default' are missing or out of date" in check.stderr
    assert "HINT: Run manage.py migrate --database default." in check.stderr


def test_check_sites_before_migrate_exits_3_with_one_line(fresh: FreshDatabase):
    check_sites = fresh.manage("check_sites")
    assert check_sites.returncode == 3, check_sites.stderr
    assert check_sites.stdout == ""
    assert_one_clean_line(check_sites, "run manage.py migrate")


def test_kong_scheduler_before_migrate_exits_3_naming_the_problem(fresh: FreshDatabase):
    scheduler = fresh.manage("kong_scheduler", "--tick", "0.2", "--no-prune")
    assert scheduler.returncode == 3, scheduler.stderr
    assert "Traceback" not in scheduler.stderr, scheduler.stderr
    # Its start-up database check may warn first (kong.W011); the last line says what to do.
    assert "run manage.py migrate" in scheduler.stderr.strip().splitlines()[-1]


def test_check_database_on_an_unreachable_database_is_one_error_not_a_traceback():
    # Nothing listens on port 1 of 127.0.0.1: a real connection refused.
    env = {**_base_env(), "KONG_TEST_DATABASE": "postgres", "PGDATABASE": "kong_nowhere", "PGPORT": "1"}
    check = FreshDatabase("postgresql", env).manage("check", "--database", "default")
    assert check.returncode == 1
    assert "Traceback" not in check.stderr, check.stderr
    assert "(kong.E013) Kong cannot read database 'default': " in check.stderr


# -- SQLite under concurrent writers ---------------------------------------------

# One writer process: it waits for the go file, then records results the way
# a view under ATOMIC_REQUESTS (or the admin) would: read first, then write,
# in one transaction. SQLite's default deferred transaction takes the write
# lock only at the first write and, if another writer got there first, fails
# at once with "database is locked" instead of waiting.
WRITER = """
import os, pathlib, time
import django
django.setup()
from django.db import transaction
from kong import services
from kong.models import Check
from kong.engine.runner import Outcome

go = pathlib.Path(os.environ["KONG_WRITER_GO"])
while not go.exists():
    time.sleep(0.01)
pks = [int(pk) for pk in os.environ["KONG_WRITER_CHECKS"].split(",")]
for _ in range(int(os.environ["KONG_WRITER_ROUNDS"])):
    for pk in pks:
        with transaction.atomic():
            check = Check.objects.select_related("test", "site", "server").get(pk=pk)
            services.record(check, Outcome("passed", 1.0, log="ok"))
"""


@pytest.mark.skipif(ON_POSTGRES, reason="the subprocesses open the SQLite test file")
@pytest.mark.django_db(transaction=True)  # the processes must see committed rows
def test_concurrent_writers_on_one_sqlite_file_never_find_it_locked(web, tmp_path: Path):
    from django.db import connection

    from kong import services
    from kong.models import Check, TestResult
    from tests.factories import make_site, make_test

    web.route("/", body="<html><body>Latest News</body></html>")
    sites = [make_site(f"site{number}", web.host) for number in range(3)]
    make_test("front-page", body='go {{ site.url }}\ncode 200\nfind "Latest News"', sites=sites)
    services.sync_checks()
    pks = ",".join(str(pk) for pk in Check.objects.values_list("pk", flat=True))
    writers, rounds, runs = 4, 20, 2
    go = tmp_path / "go"
    env = {
        **_base_env(),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "KONG_SQLITE_PATH": str(connection.settings_dict["NAME"]),
        "KONG_WRITER_GO": str(go),
        "KONG_WRITER_CHECKS": pks,
        "KONG_WRITER_ROUNDS": str(rounds),
    }
    connection.close()
    processes = [
        subprocess.Popen([sys.executable, "-c", WRITER], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(writers)
    ]
    go.touch()
    command = [sys.executable, "-m", "django", "check_sites", "--quiet", "--workers", "1"]
    processes += [
        subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) for _ in range(runs)
    ]
    errors = [process.communicate(timeout=HANG_GUARD)[1] for process in processes]
    assert [process.returncode for process in processes] == [0] * len(processes), "\n".join(errors)
    assert not any("database is locked" in error for error in errors)
    assert TestResult.objects.count() == (writers * rounds + runs) * 3
