"""Masking: secrets never show in logs, results, mails or pages.

A base module: the engine, services, pages and admin all mask through it.
"""

from __future__ import annotations

import html
from urllib.parse import quote, quote_plus

MASK = "********"


def mask(text: str, secrets: list[str]) -> str:
    """Replace every secret value in ``text`` with ``MASK``, also where it
    appears URL-encoded (a submitted form) or HTML-escaped (a page)."""
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            forms.update((secret, quote(secret, safe=""), quote_plus(secret), html.escape(secret)))
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    return text
