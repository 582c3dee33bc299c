"""Notifiers tell people when a check fails or recovers.

A notifier is a small class with one method, ``send(event)``. List dotted
paths in ``KONG_NOTIFIERS``; each class decides with ``is_enabled()``
whether the current settings ask for it, and with ``targets()`` where it
delivers (a webhook: one target per URL). A notifier that cannot deliver
raises ``NotifierError`` saying whether trying again may help.

Kong never calls a notifier while it records results: recording writes one
``Delivery`` row per alert and (notifier, target) in the same transaction,
and ``kong.notifiers.outbox`` sends them after the commit, each attempt
bounded by ``KONG_DELIVERY_TIMEOUT``, retried up to ``KONG_DELIVERY_RETRIES``
times, every outcome recorded on its row.
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
    from kong.models import Check, Test, TestResult, Type

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

    @property
    def text(self) -> str:
        """One line for chat (Slack, Mattermost): the subject, the reason and the link."""
        parts = [f"Kong {self.subject}"]
        if self.kind == "failure" and self.result.reason:
            parts.append(f"({self.result.status}: {self.result.reason})")
        url = self.result.absolute_url()
        if url:
            parts.append(url)
        return " ".join(parts)


@dataclass(frozen=True)
class Summary:
    """One message for a storm: ``alert`` ("failure" or "recovery") of one
    test on many sites of one type in one run. ``events`` holds one Event per
    check; ``total`` is how many sites of the type the test applies to."""

    alert: str
    test: Test
    site_type: Type | None
    events: tuple[Event, ...]
    total: int
    kind: str = "summary"

    @property
    def sites(self) -> int:
        return len({event.result.site_id for event in self.events})

    @property
    def what(self) -> str:
        """``37 of 40 News sites``."""
        type_name = f"{self.site_type.name} " if self.site_type else ""
        return f"{self.sites} of {max(self.total, self.sites)} {type_name}sites"

    @property
    def subject(self) -> str:
        word = "FAILED" if self.alert == "failure" else "RECOVERED"
        return f"{word}: {self.test.name} on {self.what}"

    @property
    def headline(self) -> str:
        """``front-page failing on 37 of 40 News sites``."""
        verb = "failing" if self.alert == "failure" else "recovered"
        return f"{self.test.slug} {verb} on {self.what}"

    @property
    def text(self) -> str:
        """The headline and one line per site, for chat and mail."""
        lines = [f"Kong: {self.headline}"]
        for event in self.events:
            result = event.result
            line = f"- {result.site.name}"
            if result.server_id:
                line += f" via {result.server.name}"  # type: ignore[union-attr]
            if self.alert == "failure":
                line += f": {result.status}" + (f", {result.reason}" if result.reason else "")
            url = result.absolute_url()
            lines.append(f"{line} {url}".rstrip())
        return "\n".join(lines)


class NotifierError(Exception):
    """Delivery failed. ``retry`` says whether trying again may help (a
    timeout, a refused connection, a 5xx); False for an error that will
    repeat (nobody to mail, a 4xx), which fails the delivery at once."""

    def __init__(self, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


class Notifier:
    """Base class. Subclasses implement ``send`` and may override
    ``is_enabled``, ``targets``, ``send_summary`` and ``run_checks``.

    An instance delivers to one ``target`` (one of ``targets()``); each
    (notifier, target) gets a Delivery row of its own, so one that fails is
    retried without sending the others twice."""

    def __init__(self, target: str = "") -> None:
        self.target = target

    @classmethod
    def is_enabled(cls) -> bool:
        return True

    @classmethod
    def targets(cls) -> list[str]:
        """Where this notifier delivers, one Delivery per target ('' : one)."""
        return [""]

    @classmethod
    def path(cls) -> str:
        """The dotted path Delivery rows name the notifier by."""
        return f"{cls.__module__}.{cls.__qualname__}"

    @classmethod
    def run_checks(cls) -> list[CheckMessage]:
        """The problems with this notifier's settings, as Django system
        check messages with stable ids and hints; ``manage.py check`` runs
        it for every notifier in ``KONG_NOTIFIERS``. Empty when all is well."""
        return []

    def send(self, event: Event) -> None:
        """Deliver ``event``, within ``KONG_DELIVERY_TIMEOUT`` seconds.
        Raises NotifierError on failure. Runs in a sender thread: it must not
        use the database (everything the event needs is loaded)."""
        raise NotImplementedError

    def send_summary(self, summary: Summary) -> None:
        """Deliver one message for a storm. The default sends each of its
        events through ``send``, so a notifier written before summaries
        existed keeps working; email and webhooks send one message."""
        for event in summary.events:
            self.send(event)


@cache
def _load(path: str) -> type[Notifier]:
    return import_string(path)  # type: ignore[no-any-return]


def load(path: str, target: str = "") -> Notifier:
    """The notifier at dotted ``path``, delivering to ``target``.
    Raises ImportError when it cannot be imported."""
    return _load(path)(target)


def targets() -> list[tuple[str, str]]:
    """``(dotted path, target)`` for every enabled notifier in
    ``KONG_NOTIFIERS``: one Delivery row each per alert. A path that cannot
    be imported is kept, so its deliveries fail visibly (kong.E003 names it)."""
    found: list[tuple[str, str]] = []
    for path in kong_settings.NOTIFIERS:
        try:
            cls = _load(path)
        except ImportError:
            found.append((path, ""))
            continue
        if cls.is_enabled():
            found += [(path, target) for target in cls.targets()]
    return found


def notifiers() -> list[Notifier]:
    """Instances of the enabled notifiers in ``KONG_NOTIFIERS``, one per target."""
    classes = [_load(path) for path in kong_settings.NOTIFIERS]
    return [cls(target) for cls in classes if cls.is_enabled() for target in cls.targets()]


def notify(event: Event) -> int:
    """Send ``event`` now through every enabled notifier, in this thread,
    bypassing the outbox; returns how many delivered. For scripts and
    tests: runs record alerts as Delivery rows instead."""
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
