"""Masking: secrets never show in logs, results, mails or pages.

A base module: the engine, services, pages and admin all mask through it.

``mask`` hides every form in which a secret is printed on Kong's paths: as
is, URL-encoded (a submitted form, a query string), HTML- or XML-escaped (a
page, a JUnit report), backslash-escaped (``repr``, JSON, ``unicode_escape``,
as twill's and Kong's own error messages quote values), and cut short (twill's
``show_forms`` prints ``value[:36] + " ..."``).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import quote, quote_plus

MASK = "********"

# The shortest beginning of a secret that is masked where a printed value was
# cut short. twill's ``utils.trunc`` keeps ``length - 4`` characters and adds
# " ..." (36 of a form value or link text, 20 of a field name, 8 of a field id);
# Django's Truncator adds "…". Four characters keep false positives rare.
MIN_TRUNCATED_PREFIX = 4
# What follows a value that was cut short: twill's " ...", "...", or "…".
_TRUNCATION = re.compile(r"\s?(?:\.\.\.|\u2026)")
# Characters that URL quoting leaves alone in a path or query (RFC 3986 sub-delims
# and the path characters), as httpx and browsers keep them.
_URL_SAFE_SETS = ("", "/", "!$&'()*+,;=:@/?")


def forms_of(secret: str) -> set[str]:
    """Every printed form of ``secret`` that ``mask`` hides (the secret itself included)."""
    if not secret:
        return set()
    found = {secret}
    for safe in _URL_SAFE_SETS:
        found.add(quote(secret, safe=safe))
    found.add(quote_plus(secret))
    # HTML and XML: Django's escape (html.escape), text nodes (no quotes escaped),
    # XML attributes (ElementTree: &quot; only), and &#39; for "'".
    escaped = html.escape(secret, quote=False)
    found.update(
        (
            html.escape(secret),
            escaped,
            escaped.replace('"', "&quot;"),
            html.escape(secret).replace("&#x27;", "&#39;"),
        )
    )
    # Backslash escapes, as repr(), ascii(), JSON and unicode_escape print them.
    # repr() picks its quote from the text around the secret, so both are masked.
    backslashed = {
        repr(secret)[1:-1],
        repr(secret + "'\"")[1:-4],  # single-quoted, with \' escaped
        ascii(secret)[1:-1],
        ascii(secret + "'\"")[1:-4],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        secret.encode("unicode_escape").decode("ascii"),
        # Django's json_script: <, > and & as \u escapes.
        json.dumps(secret)[1:-1].replace("<", "\\u003C").replace(">", "\\u003E").replace("&", "\\u0026"),
    }
    found |= backslashed
    # A page that prints JSON or a repr inside HTML escapes it twice.
    found.update(html.escape(form, quote=quotes) for form in backslashed for quotes in (True, False))
    found.discard("")
    return found


@lru_cache(maxsize=256)
def _forms(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """Every form of ``secrets``, longest first."""
    forms: set[str] = set()
    for secret in secrets:
        forms |= forms_of(secret)
    return tuple(sorted(forms, key=len, reverse=True))


def _mask_truncated(text: str, forms: tuple[str, ...]) -> str:
    """Mask each beginning (``MIN_TRUNCATED_PREFIX`` or more characters) of a
    form that is followed by a truncation marker, longest first."""
    spans: list[tuple[int, int]] = []
    for form in forms:
        if len(form) <= MIN_TRUNCATED_PREFIX:
            continue
        head = form[:MIN_TRUNCATED_PREFIX]
        start = text.find(head)
        while start != -1:
            common = MIN_TRUNCATED_PREFIX
            limit = min(len(form) - 1, len(text) - start)
            while common < limit and text[start + common] == form[common]:
                common += 1
            for length in range(common, MIN_TRUNCATED_PREFIX - 1, -1):
                if _TRUNCATION.match(text, start + length):
                    spans.append((start, start + length))
                    break
            start = text.find(head, start + 1)
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    for start, end in reversed(merged):
        text = text[:start] + MASK + text[end:]
    return text


def mask(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value in ``text`` with ``MASK``.

    Also masked: the secret URL-encoded (a submitted form), HTML- or
    XML-escaped (a page, a report), backslash-escaped (repr, JSON), and a
    beginning of it of at least ``MIN_TRUNCATED_PREFIX`` characters that is
    followed by a truncation marker (" ...", "...", "…"), as twill prints a
    long form value. Returns ``text`` unchanged when there are no secrets.
    """
    key = tuple(sorted({secret for secret in secrets if secret}))
    if not key or not text:
        return text
    forms = _forms(key)
    for form in forms:
        if form in text:
            text = text.replace(form, MASK)
    if "..." in text or "\u2026" in text:
        text = _mask_truncated(text, forms)
    return text
