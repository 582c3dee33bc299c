"""Django system checks for Kong misconfiguration (``kong.E001``, ...)."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Tags, Warning, register

from kong.conf import kong_settings


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    errors: list[Any] = []
    for name in ("WORKERS", "CHECK_TIMEOUT", "REQUEST_TIMEOUT", "MAIL_ON_CONSECUTIVE_FAILURES"):
        value = getattr(kong_settings, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            errors.append(
                Error(
                    f"KONG_{name} must be a non-negative number, not {value!r}.",
                    hint=f"Set KONG_{name} to a number in your settings.",
                    id="kong.E001",
                )
            )
    if not isinstance(kong_settings.WEBHOOKS, (list, tuple)) or not all(
        isinstance(url, str) and url.startswith(("http://", "https://"))
        for url in kong_settings.WEBHOOKS
    ):
        errors.append(
            Error(
                "KONG_WEBHOOKS must be a list of http(s) URLs.",
                hint='For example KONG_WEBHOOKS = ["https://hooks.example.com/kong"].',
                id="kong.E002",
            )
        )
    if (kong_settings.MAIL_MANAGERS or kong_settings.MAIL_ADMINS) and not kong_settings.BASE_URL:
        errors.append(
            Warning(
                "Kong mails link to results, but KONG_BASE_URL is empty.",
                hint='Set KONG_BASE_URL = "https://ops.example.com" so links in mails work.',
                id="kong.W001",
            )
        )
    return errors
