"""Django system checks for Kong misconfiguration.

Each problem has a stable id and a hint, so it shows up in ``manage.py
check`` (and at deploy) instead of as a crash in the 3 a.m. cron run:

- ``kong.E001``: a numeric ``KONG_*`` setting is not a number in range;
- ``kong.E002``: ``KONG_WEBHOOKS`` is not a list of http(s) URLs;
- ``kong.E003``: a ``KONG_NOTIFIERS`` entry cannot be imported or is not a Notifier;
- ``kong.E004``: ``KONG_SECRET_VARIABLES`` is not a regular expression;
- ``kong.W001``: mail is on but ``KONG_BASE_URL`` is empty, so mails cannot link to results;
- ``kong.W002``: mail is on but ``MANAGERS``/``ADMINS`` (whichever is on) is empty.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.utils.module_loading import import_string

from kong.conf import DEFAULTS, kong_settings

# setting -> (smallest allowed value, whether it must be a whole number)
NUMBERS: dict[str, tuple[float, bool]] = {
    "WORKERS": (0, True),
    "CHECK_TIMEOUT": (0.001, False),
    "REQUEST_TIMEOUT": (0.001, False),
    "KILL_GRACE": (0, False),
    "MAIL_ON_CONSECUTIVE_FAILURES": (1, True),
    "MAX_CHECKS_PER_WORKER": (0, True),
    "RESULT_RETENTION_DAYS": (0, True),
    "WEBHOOK_TIMEOUT": (0.001, False),
    "CLAIM_LEASE": (1, False),
}


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Returns the problems with Kong's settings (empty when all is well)."""
    return [*_numbers(), *_webhooks(), *_notifiers(), *_secret_pattern(), *_mail()]


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
