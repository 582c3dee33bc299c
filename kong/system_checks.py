"""Django system checks for Kong misconfiguration.

Each problem has a stable id and a hint, so it shows up in ``manage.py
check`` (and at deploy) instead of as a crash in the 3 a.m. cron run:

- ``kong.E001``: a numeric ``KONG_*`` setting is not a number in range;
- ``kong.E002``: ``KONG_WEBHOOKS`` is not a list of http(s) URLs;
- ``kong.E003``: a ``KONG_NOTIFIERS`` entry cannot be imported or is not a Notifier;
- ``kong.E004``: ``KONG_SECRET_VARIABLES`` is not a regular expression;
- ``kong.E010``: a stored test schedule is unusable (``check --database``:
  ``Test.save`` refuses one, but a raw ``update()`` or ``loaddata`` can store it);
- ``kong.E011``: ``KONG_TIME_ZONE`` (or ``TIME_ZONE``) is not a known time zone;
- ``kong.E012``: ``KONG_RESULT_RETENTION_DAYS`` is not None or a whole number of days;
- ``kong.W001``: mail is on but ``KONG_BASE_URL`` is empty, so mails cannot link to results;
- ``kong.W002``: mail is on but ``MANAGERS``/``ADMINS`` (whichever is on) is empty;
- ``kong.W010``: ``KONG_CLAIM_LEASE`` is shorter than a check may run, so an
  overlapping ``check_sites --due`` could claim a check that is still running.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
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
    "CLAIM_LEASE": (1, False),
}


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Returns the problems with Kong's settings (empty when all is well)."""
    return [
        *_numbers(),
        *_webhooks(),
        *_notifiers(),
        *_secret_pattern(),
        *_time_zone(),
        *_retention(),
        *_lease(),
        *_mail(),
    ]


@register(Tags.database)
def check_stored_schedules(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E010 for each test whose stored schedule is unusable; runs only with
    ``manage.py check --database`` (it reads the database)."""
    if not databases:
        return []
    from kong.models import Test

    errors: list[CheckMessage] = []
    for slug, expression in Test.objects.values_list("slug", "schedule").order_by("slug"):
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


def _webhooks() -> list[CheckMessage]:
    hooks = kong_settings.WEBHOOKS
    if isinstance(hooks, (list, tuple)) and all(
        isinstance(url, str) and url.startswith(("http://", "https://")) for url in hooks
    ):
        return []
    return [
        Error(
            "KONG_WEBHOOKS must be a list of http(s) URLs.",
            hint='For example KONG_WEBHOOKS = ["https://hooks.example.com/kong"].',
            id="kong.E002",
        )
    ]


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
    numbers = all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in (lease, timeout, grace))
    if not numbers or lease >= timeout + grace:
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


def _mail() -> list[CheckMessage]:
    warnings: list[CheckMessage] = []
    if not (kong_settings.MAIL_MANAGERS or kong_settings.MAIL_ADMINS):
        return warnings
    if not kong_settings.BASE_URL:
        warnings.append(
            Warning(
                "Kong mails link to results, but KONG_BASE_URL is empty.",
                hint='Set KONG_BASE_URL = "https://ops.example.com" so links in mails work.',
                id="kong.W001",
            )
        )
    for flag, people in (("MAIL_MANAGERS", "MANAGERS"), ("MAIL_ADMINS", "ADMINS")):
        if getattr(kong_settings, flag) and not getattr(settings, people, None):
            warnings.append(
                Warning(
                    f"KONG_{flag} is on but settings.{people} is empty, so nobody gets Kong's mail.",
                    hint=f'Set {people} = [("Ops", "ops@example.com")].',
                    id="kong.W002",
                )
            )
    return warnings
