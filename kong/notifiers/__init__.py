"""Notifiers tell people when a check fails or recovers.

A notifier is a small class with one method, ``send(event)``. List dotted
paths in ``KONG_NOTIFIERS``; each class decides with ``is_enabled()``
whether the current settings ask for it. A notifier that cannot deliver
raises ``NotifierError``; Kong logs it and carries on with the run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from django.core.checks import CheckMessage
from django.utils.module_loading import import_string

from kong.conf import kong_settings

if TYPE_CHECKING:
    from kong.models import Check, TestResult

logger = logging.getLogger("kong.notifiers")


@dataclass(frozen=True)
class Event:
    """One alert: ``kind`` is "failure" or "recovery"."""

    kind: str
    check: Check
    result: TestResult

    @property
    def failing_line_text(self) -> str:
        line = self.result.failed_line
        lines = self.result.script.splitlines()
        if line and 0 < line <= len(lines):
            return lines[line - 1].strip()
        return ""

    @property
    def subject(self) -> str:
        word = "FAILED" if self.kind == "failure" else "RECOVERED"
        return f"{word}: {self.result.site.name} / {self.result.test.name}"


class NotifierError(Exception):
    """Delivery failed. ``retry`` says whether trying again may help."""

    def __init__(self, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


class Notifier:
    """Base class. Subclasses implement ``send`` and may override
    ``is_enabled`` and ``run_checks``."""

    @classmethod
    def is_enabled(cls) -> bool:
        return True

    @classmethod
    def run_checks(cls) -> list[CheckMessage]:
        """The problems with this notifier's settings, as Django system
        check messages with stable ids and hints; ``manage.py check`` runs
        it for every notifier in ``KONG_NOTIFIERS``. Empty when all is well."""
        return []

    def send(self, event: Event) -> None:
        """Deliver ``event``. Raises NotifierError on failure."""
        raise NotImplementedError


@cache
def _load(path: str) -> type[Notifier]:
    return import_string(path)  # type: ignore[no-any-return]


def notifiers() -> list[Notifier]:
    """Instances of the enabled notifiers in ``KONG_NOTIFIERS``."""
    classes = [_load(path) for path in kong_settings.NOTIFIERS]
    return [cls() for cls in classes if cls.is_enabled()]


def notify(event: Event) -> int:
    """Send ``event`` through every enabled notifier; returns how many delivered."""
    delivered = 0
    for notifier in notifiers():
        try:
            notifier.send(event)
        except NotifierError as error:
            logger.warning("%s could not deliver %s: %s", type(notifier).__name__, event.subject, error)
        except Exception:
            logger.exception("%s failed on %s", type(notifier).__name__, event.subject)
        else:
            delivered += 1
    return delivered
