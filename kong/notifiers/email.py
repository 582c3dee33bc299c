"""Failure and recovery mail to MANAGERS and/or ADMINS (django-kong's semantics)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import CheckMessage, Warning
from django.core.mail import send_mail
from django.template.loader import render_to_string

from kong.conf import kong_settings
from kong.notifiers import Event, Notifier, NotifierError


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
        to = recipients()
        if not to:
            raise NotifierError("KONG_MAIL_MANAGERS/ADMINS is on but MANAGERS/ADMINS is empty")
        context = {"event": event, "result": event.result, "check": event.check, "url": event.result.absolute_url()}
        body = render_to_string(f"kong/email/{event.kind}.txt", context)
        try:
            send_mail(
                f"{kong_settings.EMAIL_SUBJECT_PREFIX}{event.subject}",
                body,
                settings.SERVER_EMAIL,
                to,
            )
        except OSError as error:
            raise NotifierError(f"cannot send mail: {error}", retry=True) from error
