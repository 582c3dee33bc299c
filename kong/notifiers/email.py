"""Failure and recovery mail to MANAGERS and/or ADMINS (django-kong's semantics)."""

from __future__ import annotations

import django
from django.conf import settings
from django.core.checks import CheckMessage, Warning
from django.core.mail import EmailMessage, get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.template.loader import render_to_string

from kong.conf import kong_settings
from kong.notifiers import Event, Notifier, NotifierError, Summary


def recipients() -> list[str]:
    people: list[tuple[str, str] | str] = []
    if kong_settings.MAIL_MANAGERS:
        people += list(settings.MANAGERS)
    if kong_settings.MAIL_ADMINS:
        people += list(settings.ADMINS)
    addresses = [person[1] if isinstance(person, (tuple, list)) else person for person in people]
    return list(dict.fromkeys(addresses))


class EmailNotifier(Notifier):
    @classmethod
    def is_enabled(cls) -> bool:
        return kong_settings.MAIL_MANAGERS or kong_settings.MAIL_ADMINS

    @classmethod
    def run_checks(cls) -> list[CheckMessage]:
        """kong.W001: no ``KONG_BASE_URL`` for links; kong.W002: nobody to mail."""
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

    def send(self, event: Event) -> None:
        context = {
            "event": event,
            "result": event.result,
            "check": event.check,
            "url": event.result.absolute_url(),
        }
        self._mail(event.subject, render_to_string(f"kong/email/{event.kind}.txt", context))

    def send_summary(self, summary: Summary) -> None:
        """One mail for a storm, listing every site (``kong/email/summary.txt``)."""
        self._mail(summary.subject, render_to_string("kong/email/summary.txt", {"summary": summary}))

    def _mail(self, subject: str, body: str) -> None:
        to = recipients()
        if not to:
            raise NotifierError("KONG_MAIL_MANAGERS/ADMINS is on but MANAGERS/ADMINS is empty")
        message = EmailMessage(
            f"{kong_settings.EMAIL_SUBJECT_PREFIX}{subject}", body, settings.SERVER_EMAIL, to
        )
        try:
            mail_connection().send_messages([message])
        except OSError as error:  # smtplib's errors are OSErrors
            # Refused, timed out, dropped, or a 4xx/5xx reply: all may pass.
            raise NotifierError(f"cannot send mail: {error or type(error).__name__}", retry=True) from error


def mail_connection() -> BaseEmailBackend:
    """The project's mail backend, with each socket operation bounded by
    ``KONG_DELIVERY_TIMEOUT`` (Django's ``EMAIL_TIMEOUT`` defaults to None: a
    silent SMTP server would hold a delivery for ever). A backend configured
    with a shorter timeout keeps it. Django 6.1+: ``mailers.default``."""
    if django.VERSION >= (6, 1):
        from django.core.mail import mailers  # type: ignore[attr-defined,unused-ignore]

        connection: BaseEmailBackend = mailers.default
    else:
        connection = get_connection()
    limit = kong_settings.DELIVERY_TIMEOUT
    if hasattr(connection, "timeout") and (connection.timeout is None or connection.timeout > limit):
        connection.timeout = limit
    return connection
