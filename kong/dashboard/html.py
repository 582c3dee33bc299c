"""The dashboard's hot HTML, written in Python: the fleet matrix and the
failing list render thousands of cells, which a template would make slow.
The ``kong_tags`` library wraps these; every value is escaped here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape

from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from kong.dashboard import charts
from kong.dashboard.fleet import CheckState, Row
from kong.dashboard.history import Point
from kong.status import ICONS, icon, worst


def status_badge(status: str) -> SafeString:
    """``<span class="k-status k-failed">✗ failed</span>``: icon and word."""
    status = escape(str(status))
    return mark_safe(
        f'<span class="k-status k-{status}"><span class="k-icon" aria-hidden="true">{icon(status)}</span> '
        f"{status}</span>"
    )


_UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"))


def ago(when: datetime | None) -> str:
    """``just now``, ``5 minutes ago``, ``2 days ago``; '' for never."""
    if when is None:
        return ""
    seconds = (timezone.now() - when).total_seconds()
    for size, unit in _UNITS:
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


class Links:
    """URLs for thousands of cells from one reverse() per URL name."""

    SITE, TEST = "kong-site-slug-placeholder", "kong-test-slug-placeholder"

    def __init__(self) -> None:
        self.history = reverse("kong:testresult_for_site", args=[self.SITE, self.TEST])
        self.site = reverse("kong:site_detail", args=[self.SITE])
        self.test = reverse("kong:test_detail", args=[self.TEST])
        self.result = reverse("kong:result_detail", args=[0]).replace("/0/", "/{}/")

    def for_history(self, site: str, test: str) -> str:
        return self.history.replace(self.SITE, site).replace(self.TEST, test)

    def for_site(self, site: str) -> str:
        return self.site.replace(self.SITE, site)

    def for_test(self, test: str) -> str:
        return self.test.replace(self.TEST, test)

    def for_result(self, pk: int) -> str:
        return self.result.format(pk)


_EMPTY_CELL = '<td class="k-cell k-none"><span class="k-visually-hidden">not checked</span></td>'
_STATUS_HTML = {
    status: f'<span class="k-icon" aria-hidden="true">{icon}</span> <span class="k-word">{status}</span>'
    for status, icon in ICONS.items()
}


def seconds_text(seconds: float) -> str:
    """``short_age`` for a number of seconds."""
    if seconds < 10:
        return "now"
    if seconds < 60:
        return f"{int(seconds)}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"


def _cell(checks: list[CheckState], href: str, now: float) -> str:
    """One matrix cell. Kept lean: the index renders thousands of them, so only
    text that can hold markup (server names, reasons) goes through escape()."""
    if not checks:
        return _EMPTY_CELL
    status = checks[0].status if len(checks) == 1 else worst([check.status for check in checks])
    parts = [f'<td class="k-cell k-{status if status in ICONS else escape(status)}">']
    for check in checks:
        server = f'<span class="k-server">{escape(check.server.name)}</span> ' if check.server else ""
        if check.location:
            server += f'<span class="k-location">{escape(check.location.name)}</span> '
        label = _STATUS_HTML.get(check.status) or escape(check.status)
        if check.last_run_at is None:
            parts.append(f'<a href="{href}" title="not run yet">{server}{label}</a>')
            continue
        age = seconds_text(now - check.last_run_at.timestamp())
        word = check.status if check.status in ICONS else escape(check.status)
        title = f"{word}, last run {age} ago"
        if check.duration is not None:
            title += f", {charts.format_ms(check.duration)}"
        if check.is_failing:
            if check.consecutive_failures > 1:
                title += f"; {check.consecutive_failures} failures in a row"
            title += f": {escape(check.reason[:200])}"
        muted = ""
        if check.muted_until is not None and check.muted_until.timestamp() > now:
            muted, title = ' <span class="k-muted">(muted)</span>', f"{title} (muted)"
        parts.append(f'<a href="{href}" title="{title}">{server}{label} <span class="k-age">{age}</span>{muted}</a>')
    parts.append("</td>")
    return "".join(parts)


def matrix_rows(links: Links, rows: Sequence[Row]) -> SafeString:
    """The fleet matrix's ``<tr>``s: each site's header cell, then a cell per test.

    Written in Python rather than as a template because the index renders
    thousands of cells and must stay fast.
    """
    now = timezone.now().timestamp()
    html = []
    for row in rows:
        site = row.site
        kind = f' <span class="k-type">{escape(site.type.name)}</span>' if site.type else ""
        flag = f' <span class="k-row-failing">{row.failing} failing</span>' if row.failing else ""
        html.append(
            f'<tr class="{"k-row-failing-row" if row.failing else "k-row-ok"}"><th scope="row">'
            f'<a href="{escape(links.for_site(site.slug))}">{escape(site.name)}</a>{kind}{flag}</th>'
        )
        site_history = escape(links.history.replace(links.SITE, site.slug))
        html += [
            _cell(checks, site_history.replace(links.TEST, escape(checks[0].test.slug)) if checks else "", now)
            for checks in row.cells
        ]
        html.append("</tr>")
    return mark_safe("".join(html))  # every value was escaped above


def failing_rows(links: Links, checks: Sequence[CheckState]) -> SafeString:
    """The "Failing now" table's rows: site, test, status, since, reason, link to the failing line.

    Python for the same reason as ``matrix_rows``: a bad deploy can fail hundreds of checks at once.
    """
    rows = []
    for check in checks:
        server = f' <span class="k-server">via {escape(check.server.name)}</span>' if check.server else ""
        streak = (
            f' <span class="k-streak">{check.consecutive_failures} in a row</span>'
            if check.consecutive_failures > 1
            else ""
        )
        reason = check.reason if len(check.reason) <= 160 else f"{check.reason[:159]}…"
        result = (
            f'<a href="{links.for_result(check.result_id)}#failed-line">Show the failing line</a>'
            if check.result_id
            else ""
        )
        site, test = escape(check.site.slug), escape(check.test.slug)
        rows.append(
            f'<tr><td><a href="{links.for_site(site)}">{escape(check.site.name)}</a></td>'
            f'<td><a href="{links.for_history(site, test)}">{escape(check.test.name)}</a>{server}</td>'
            f"<td>{status_badge(check.status)}{streak}</td>"
            f'<td><time datetime="{check.status_since.isoformat()}">{ago(check.status_since)}</time></td>'
            f'<td class="k-reason">{escape(reason)}</td><td>{result}</td></tr>'
        )
    return mark_safe("".join(rows))  # every value was escaped above


def samples(points: Sequence[Point], links: Links | None = None) -> list[charts.Sample]:
    return [
        charts.Sample(
            when=point.run_date,
            value=point.duration,
            failed=not point.succeeded,
            href=links.for_result(point.id) if links else "",
            status=point.status,
        )
        for point in points
    ]


