"""Django system checks for Kong misconfiguration.

Each problem has a stable id and a hint, so it shows up in ``manage.py
check`` (and at deploy) instead of as a crash in the 3 a.m. cron run:

- ``kong.E001``: a numeric ``KONG_*`` setting is not a number in range;
- ``kong.E003``: a ``KONG_NOTIFIERS`` entry cannot be imported or is not a Notifier;
- ``kong.E004``: ``KONG_SECRET_VARIABLES`` is not a regular expression;
- ``kong.E010``: a stored test schedule is unusable (``check --database``:
  ``Test.save`` refuses one, but a raw ``update()`` or ``loaddata`` can store it);
- ``kong.E011``: ``KONG_TIME_ZONE`` (or ``TIME_ZONE``) is not a known time zone;
- ``kong.E012``: ``KONG_RESULT_RETENTION_DAYS`` is not None or a whole number of days;
- ``kong.W010``: ``KONG_CLAIM_LEASE`` is shorter than a check may run, so an
  overlapping ``check_sites --due`` could claim a check that is still running
  (with ``check --database``: also against each active test's own timeout);
- ``kong.W011``: ``check --database``: Kong's migrations are not all applied
  (silent during ``migrate`` itself, which is about to apply them);
- ``kong.E013``: ``check --database``: Kong cannot read its tables;
- ``kong.W012``: Kong's database is a SQLite file whose transactions do not
  take the write lock up front (``"transaction_mode": "IMMEDIATE"``);
- ``kong.W013``: Kong's database is a SQLite file not in WAL mode;
- ``kong.W014``: a ``KONG_*`` setting that Kong does not know (a misspelling
  would otherwise be silently ignored);
- ``kong.E020``: ``KONG_EXECUTOR`` is not "pool" or "tasks", or is "tasks"
  with no Django Tasks framework installed or no ``TASKS`` backend configured;
- ``kong.E021``: ``KONG_EXECUTOR = "tasks"`` with the Immediate backend (checks
  would run inside the enqueuing process) or the Dummy one (never run);
- ``kong.E022``: a queue Kong uses is not in the backend's ``QUEUES``:
  "default" (where Kong's tasks are declared), ``KONG_DEFAULT_QUEUE``, and
  with ``check --database`` each active location's; or a queue name longer
  than django-tasks-db stores (32 characters);
- ``kong.E023``: the django-tasks-db backend is configured but
  ``django_tasks_db`` is not in ``INSTALLED_APPS``.

Each notifier checks its own settings (``Notifier.run_checks``): the webhook
notifier raises ``kong.E002``, the email notifier ``kong.W001`` and
``kong.W002``; these run for the notifiers listed in ``KONG_NOTIFIERS``.

The checks tagged ``database`` run only with ``manage.py check --database``
(and ``migrate``, which passes its database); they must work on a fresh,
unmigrated database, so they look at the migration state before any table.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, router
from django.db.models import Max
from django.utils.module_loading import import_string

from kong import schedule
from kong.conf import DEFAULTS, kong_settings

# setting -> (smallest allowed value, whether it must be a whole number)
NUMBERS: dict[str, tuple[float, bool]] = {
    "WORKERS": (0, True),
    "CHECK_TIMEOUT": (0.001, False),
    "REQUEST_TIMEOUT": (0.001, False),
    "KILL_GRACE": (0, False),
    "MAIL_ON_CONSECUTIVE_FAILURES": (1, True),
    "MAX_CHECKS_PER_WORKER": (0, True),
    "WEBHOOK_TIMEOUT": (0.001, False),
    "DELIVERY_TIMEOUT": (0.001, False),
    "DELIVERY_RETRIES": (1, True),
    "ALERT_SUMMARY_THRESHOLD": (2, True),
    "CLAIM_LEASE": (1, False),
    "TASK_BATCH": (1, True),
}


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Returns the problems with Kong's settings (empty when all is well)."""
    return [
        *_numbers(),
        *_notifiers(),
        *_unknown_settings(),
        *_secret_pattern(),
        *_time_zone(),
        *_retention(),
        *_lease(),
        *_sqlite(),
        *_executor(),
    ]


@register(Tags.database)
def check_database(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The problems stored in Kong's tables; runs only with ``manage.py check
    --database`` (it reads the database). W011 instead when Kong's migrations
    are not all applied, E013 when the database cannot be read."""
    from kong.models import Test

    messages: list[CheckMessage] = []
    for alias in databases or ():
        if not router.allow_migrate_model(alias, Test):
            continue
        try:
            pending = pending_migrations(alias)
            if pending:
                if not _running_migrate():
                    messages.append(_not_migrated(alias, pending))
                continue
            messages += _stored_schedules(alias)
            messages += _stored_timeouts(alias)
            messages += _location_queues(alias)
        except DatabaseError as error:
            messages.append(
                Error(
                    f"Kong cannot read database {alias!r}: {_first_line(error)}",
                    hint=f"Check settings.DATABASES[{alias!r}] and that the database server is running.",
                    id="kong.E013",
                )
            )
    return messages


def pending_migrations(using: str = DEFAULT_DB_ALIAS) -> list[str]:
    """The names of Kong's migrations not yet applied to database ``using``
    (all of them on a fresh database), oldest first. Reads the migration
    table only, so it works before ``migrate``; raises DatabaseError when the
    database cannot be reached."""
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[using])
    targets = [key for key in executor.loader.graph.leaf_nodes() if key[0] == "kong"]
    return [
        migration.name for migration, _ in executor.migration_plan(targets) if migration.app_label == "kong"
    ]


def longest_check_seconds(timeout: float | None = None, *, using: str | None = None) -> float:
    """The longest one check may run, in seconds, the kill grace included:
    what ``KONG_CLAIM_LEASE`` must cover so that a claim never expires while
    its check still runs.

    ``timeout`` is a run's own limit (``check_sites --timeout``), which
    replaces every test's; without it, the largest of ``KONG_CHECK_TIMEOUT``
    and the active tests' own timeouts. Reads the database (raises
    DatabaseError when it cannot)."""
    from kong.models import Test

    grace = kong_settings.KILL_GRACE
    if timeout:
        return float(timeout) + grace
    tests = Test.objects.using(using) if using else Test.objects.all()
    longest = tests.filter(is_active=True).aggregate(longest=Max("timeout"))["longest"] or 0
    return max(kong_settings.CHECK_TIMEOUT, float(longest)) + grace


def _running_migrate() -> bool:
    # `migrate` runs the database checks before it migrates: telling the
    # operator to run the command they are running would only confuse.
    return sys.argv[1:2] == ["migrate"]


def _not_migrated(alias: str, pending: list[str]) -> CheckMessage:
    shown = ", ".join(pending[:3]) + (f" and {len(pending) - 3} more" if len(pending) > 3 else "")
    return Warning(
        f"Kong's tables in database {alias!r} are missing or out of date: "
        f"{len(pending)} migration{'s' if len(pending) != 1 else ''} not applied ({shown}).",
        hint=f"Run manage.py migrate --database {alias}. Kong's commands cannot run until then.",
        id="kong.W011",
    )


def _stored_schedules(alias: str) -> list[CheckMessage]:
    """E010 for each test whose stored schedule is unusable (``Test.save``
    refuses one, but a raw ``update()`` or ``loaddata`` can store it)."""
    from kong.models import Test

    errors: list[CheckMessage] = []
    for slug, expression in Test.objects.using(alias).values_list("slug", "schedule").order_by("slug"):
        try:
            schedule.validate_schedule(expression)
        except schedule.ScheduleError as error:
            errors.append(
                Error(
                    f"Test {slug!r} has an unusable schedule: {error}.",
                    hint=f"Fix it in the admin; until then it runs on {schedule.DEFAULT_SCHEDULE!r}.",
                    id="kong.E010",
                )
            )
    return errors


def _stored_timeouts(alias: str) -> list[CheckMessage]:
    """W010 when an active test's own timeout outlasts the claim lease; the
    settings-only W010 already covers ``KONG_CHECK_TIMEOUT``."""
    from kong.models import Test

    lease, timeout, grace = kong_settings.CLAIM_LEASE, kong_settings.CHECK_TIMEOUT, kong_settings.KILL_GRACE
    if not _all_numbers(lease, timeout, grace) or lease < timeout + grace:
        return []  # E001 or the settings-only W010 says it already
    too_long = list(
        Test.objects.using(alias)
        .filter(is_active=True, timeout__gt=max(timeout, lease - grace))
        .order_by("-timeout", "slug")
        .values_list("slug", "timeout")
    )
    if not too_long:
        return []
    longest = (too_long[0][1] or 0) + grace
    names = ", ".join(f"{slug!r} ({seconds} s)" for slug, seconds in too_long[:5])
    more = f" and {len(too_long) - 5} more" if len(too_long) > 5 else ""
    return [
        Warning(
            f"KONG_CLAIM_LEASE ({lease:g} s) is shorter than a check may run: the timeout of "
            f"test{'s' if len(too_long) > 1 else ''} {names}{more} plus KONG_KILL_GRACE ({grace:g} s).",
            hint=f"A claim can expire while its check still runs, and an overlapping check_sites --due "
            f"would run it again. Raise KONG_CLAIM_LEASE to at least {longest:g}, or lower those timeouts.",
            id="kong.W010",
        )
    ]


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _numbers() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for name, (smallest, whole) in NUMBERS.items():
        value = getattr(kong_settings, name)
        kind = "a whole number" if whole else "a number"
        number = isinstance(value, int) if whole else isinstance(value, (int, float))
        if not number or isinstance(value, bool) or value < smallest:
            least = "more than 0" if 0 < smallest < 1 else f"at least {smallest:g}"
            errors.append(
                Error(
                    f"KONG_{name} must be {kind} {least}, not {value!r}.",
                    hint=f"Set KONG_{name} in your settings, or remove it to use the default ({DEFAULTS[name]!r}).",
                    id="kong.E001",
                )
            )
    return errors


def _notifiers() -> list[CheckMessage]:
    from kong.notifiers import Notifier

    errors: list[CheckMessage] = []
    for path in kong_settings.NOTIFIERS:
        try:
            notifier = import_string(path)
        except ImportError as error:
            problem = f"cannot be imported ({error})"
        else:
            if isinstance(notifier, type) and issubclass(notifier, Notifier):
                errors += notifier.run_checks()  # each notifier validates its own settings
                continue
            problem = "is not a subclass of kong.notifiers.Notifier"
        errors.append(
            Error(
                f"KONG_NOTIFIERS entry {path!r} {problem}.",
                hint="List dotted paths to Notifier subclasses, e.g. 'kong.notifiers.email.EmailNotifier'.",
                id="kong.E003",
            )
        )
    return errors


def _secret_pattern() -> list[CheckMessage]:
    try:
        re.compile(kong_settings.SECRET_VARIABLES)
    except (re.error, TypeError) as error:
        return [
            Error(
                f"KONG_SECRET_VARIABLES is not a regular expression: {error}.",
                hint='The default is "API|TOKEN|KEY|SECRET|PASS|SIGNATURE".',
                id="kong.E004",
            )
        ]
    return []


def _time_zone() -> list[CheckMessage]:
    try:
        schedule.schedule_timezone()
    except schedule.ScheduleError as error:
        return [
            Error(
                f"Kong cannot read test schedules: {error}.",
                hint='Set KONG_TIME_ZONE (or TIME_ZONE) to an IANA name such as "Europe/Paris".',
                id="kong.E011",
            )
        ]
    return []


def _retention() -> list[CheckMessage]:
    days = kong_settings.RESULT_RETENTION_DAYS
    if days is None or (isinstance(days, int) and not isinstance(days, bool) and days >= 0):
        return []
    return [
        Error(
            f"KONG_RESULT_RETENTION_DAYS must be a whole number of days (0 or None: keep all), not {days!r}.",
            hint="For example KONG_RESULT_RETENTION_DAYS = 90.",
            id="kong.E012",
        )
    ]


def _lease() -> list[CheckMessage]:
    lease, timeout, grace = kong_settings.CLAIM_LEASE, kong_settings.CHECK_TIMEOUT, kong_settings.KILL_GRACE
    if not _all_numbers(lease, timeout, grace) or lease >= timeout + grace:
        return []  # E001 reports values that are not numbers
    return [
        Warning(
            f"KONG_CLAIM_LEASE ({lease:g} s) is shorter than a check may run "
            f"(KONG_CHECK_TIMEOUT + KONG_KILL_GRACE = {timeout + grace:g} s).",
            hint="A claim can expire while its check still runs, and an overlapping "
            "check_sites --due would run it again. Raise KONG_CLAIM_LEASE.",
            id="kong.W010",
        )
    ]


def _sqlite() -> list[CheckMessage]:
    from kong.models import TestResult

    alias = router.db_for_write(TestResult)
    connection = connections[alias]
    name = str(connection.settings_dict.get("NAME") or "")
    if connection.vendor != "sqlite" or name in ("", ":memory:") or "mode=memory" in name:
        return []  # an in-memory database has one connection: nothing to lock against
    return sqlite_file_problems(alias, connection.settings_dict)


# "PRAGMA journal_mode=WAL", any case and spacing, quoted or not.
WAL_COMMAND = re.compile(r"journal_mode\s*=\s*['\"]?wal\b", re.IGNORECASE)


def sqlite_file_problems(alias: str, settings_dict: dict[str, Any]) -> list[CheckMessage]:
    """W012 and W013 for a SQLite database file that concurrent writers
    (check_sites, kong_scheduler, the admin) would find locked."""
    options = settings_dict.get("OPTIONS") or {}
    where = f'DATABASES["{alias}"]["OPTIONS"]'
    problems: list[CheckMessage] = []
    if str(options.get("transaction_mode") or "").upper() != "IMMEDIATE":
        problems.append(
            Warning(
                f"Kong's database {alias!r} is a SQLite file whose transactions take the write lock only "
                "when they first write, so concurrent writers can fail at once with 'database is locked'.",
                hint=f'Set {where}["transaction_mode"] = "IMMEDIATE", and "timeout": 20 (seconds a writer waits).',
                id="kong.W012",
            )
        )
    if not WAL_COMMAND.search(str(options.get("init_command") or "")) and not _wal_file(
        settings_dict["NAME"]
    ):
        problems.append(
            Warning(
                f"Kong's database {alias!r} is a SQLite file not in WAL mode, so readers (the dashboard) "
                "block writers and a run can fail with 'database is locked'.",
                hint=f'Set {where}["init_command"] = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;" '
                "(WAL needs a local disk, not a network file system).",
                id="kong.W013",
            )
        )
    return problems


def _wal_file(name: object) -> bool:
    """Whether the SQLite file ``name`` is in WAL mode, which persists in the
    file: its header's read and write versions are 2 (1: rollback journal)."""
    try:
        with Path(str(name)).open("rb") as file:
            header = file.read(20)
    except OSError:
        return False
    return header[:16] == b"SQLite format 3\x00" and header[18:20] == b"\x02\x02"


def _all_numbers(*values: object) -> bool:
    return all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values)


def _unknown_settings() -> list[CheckMessage]:
    """A misspelt ``KONG_*`` setting is silently ignored; say so."""
    import difflib

    warnings: list[CheckMessage] = []
    for name in sorted(dir(settings)):
        if not name.startswith("KONG_") or name[5:] in DEFAULTS:
            continue
        close = difflib.get_close_matches(name[5:], DEFAULTS, n=1)
        hint = f"Did you mean KONG_{close[0]}?" if close else "See the settings table in Kong's README."
        warnings.append(Warning(f"{name} is not a Kong setting; Kong ignores it.", hint=hint, id="kong.W014"))
    return warnings


# -- scale-out on Django Tasks ---------------------------------------------------

# The engine's default queue, where Kong's tasks are declared (kong.tasks).
ENGINE_DEFAULT_QUEUE = "default"
# django-tasks-db stores a task's queue name in 32 characters.
DB_QUEUE_NAME_LENGTH = 32


def _tasks_backend() -> dict[str, Any] | None:
    """The project's default TASKS backend settings, or None when it has none."""
    configured = getattr(settings, "TASKS", None)
    if not isinstance(configured, dict) or not isinstance(configured.get("default"), dict):
        return None
    backend: dict[str, Any] = configured["default"]
    return backend


def _backend_kind(backend: dict[str, Any]) -> str:
    path = str(backend.get("BACKEND", ""))
    for kind in ("Immediate", "Dummy", "Database", "RQ"):
        if path.rsplit(".", 1)[-1].startswith(kind):
            return kind
    return ""


def _executor() -> list[CheckMessage]:
    from kong.services.dispatch import tasks_framework

    executor = kong_settings.EXECUTOR
    backend = _tasks_backend()
    if executor not in ("pool", "tasks"):
        return [
            Error(
                f'KONG_EXECUTOR must be "pool" or "tasks", not {executor!r}.',
                hint='"pool" runs checks here; "tasks" enqueues them for Django Tasks workers.',
                id="kong.E020",
            )
        ]
    problems: list[CheckMessage] = []
    if executor == "tasks" and (tasks_framework() is None or backend is None):
        missing = "no Django Tasks framework is installed" if tasks_framework() is None else "settings.TASKS is not set"
        problems.append(
            Error(
                f'KONG_EXECUTOR is "tasks" but {missing}, so nothing would run the checks.',
                hint="pip install 'django-kong[tasks]', add 'django_tasks_db' to INSTALLED_APPS and set TASKS "
                '= {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": []}} (README, Scaling out).',
                id="kong.E020",
            )
        )
    if backend is None:
        return problems
    kind = _backend_kind(backend)
    if executor == "tasks" and kind in ("Immediate", "Dummy"):
        what = "run every check inside the process that enqueues it" if kind == "Immediate" else "never run a check"
        problems.append(
            Error(
                f'KONG_EXECUTOR is "tasks" but the TASKS backend is the {kind} backend, which would {what}.',
                hint="Use a backend with workers, such as django_tasks_db.DatabaseBackend and manage.py db_worker.",
                id="kong.E021",
            )
        )
    if kind == "Database" and not apps_installed("django_tasks_db"):
        problems.append(
            Error(
                "The TASKS backend is django-tasks-db but 'django_tasks_db' is not in INSTALLED_APPS.",
                hint="Add 'django_tasks_db' to INSTALLED_APPS and run manage.py migrate.",
                id="kong.E023",
            )
        )
    if kind not in ("Immediate", "Dummy"):  # E021 already, or a development setup
        problems += _queue_problems(backend, [ENGINE_DEFAULT_QUEUE, str(kong_settings.DEFAULT_QUEUE)], "")
    return problems


def _queue_problems(backend: dict[str, Any], queues: list[str], whose: str) -> list[CheckMessage]:
    """E022 for each of ``queues`` the backend would refuse."""
    allowed = backend.get("QUEUES", [ENGINE_DEFAULT_QUEUE])  # the engines' default when QUEUES is absent
    problems: list[CheckMessage] = []
    for queue in dict.fromkeys(queues):
        if allowed and queue not in allowed:
            problems.append(
                Error(
                    f"Queue {queue!r}{whose} is not in the TASKS backend's QUEUES ({list(allowed)!r}).",
                    hint=f"Add {queue!r} to TASKS['default']['QUEUES'] (Kong uses 'default', KONG_DEFAULT_QUEUE "
                    "and each location's queue), or leave QUEUES empty.",
                    id="kong.E022",
                )
            )
        elif _backend_kind(backend) == "Database" and len(queue) > DB_QUEUE_NAME_LENGTH:
            problems.append(
                Error(
                    f"Queue {queue!r}{whose} is longer than django-tasks-db stores ({DB_QUEUE_NAME_LENGTH} characters).",
                    hint="Give it a shorter queue_name.",
                    id="kong.E022",
                )
            )
    return problems


def _location_queues(alias: str) -> list[CheckMessage]:
    """E022 for each active location whose queue the TASKS backend would refuse."""
    from kong.models import Location

    backend = _tasks_backend()
    if backend is None or _backend_kind(backend) in ("Immediate", "Dummy"):
        return []
    problems: list[CheckMessage] = []
    for slug, queue in Location.objects.using(alias).filter(is_active=True).order_by("slug").values_list(
        "slug", "queue_name"
    ):
        problems += _queue_problems(backend, [queue], f" (location {slug!r})")
    return problems


def apps_installed(name: str) -> bool:
    from django.apps import apps

    return apps.is_installed(name)
