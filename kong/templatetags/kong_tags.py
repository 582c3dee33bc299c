"""Template tags for Kong's pages: status badges, ages, matrix rows, charts.

``{% load kong_tags %}``. Status is always shown with an icon and a word,
never by colour alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django import template
from django.http import QueryDict
from django.utils import timezone
from django.utils.safestring import SafeString
from django.utils.timesince import timesince

from kong import dashboard
from kong.dashboard import charts, html
from kong.masking import mask
from kong.models import Site
from kong.status import icon

register = template.Library()

register.filter("status_badge", html.status_badge)
register.filter("ago", html.ago)


@register.filter
def status_icon(status: str) -> str:
    return icon(str(status))


def short_age(when: datetime | None, now: datetime) -> str:
    """``now``, ``45s``, ``4m``, ``3h``, ``2d``; '' for never."""
    if when is None:
        return ""
    return html.seconds_text((now - when).total_seconds())


@register.filter
def age(when: datetime | None) -> str:
    return short_age(when, timezone.now())


@register.filter
def ms(value: float | None) -> str:
    """A duration in milliseconds, readably: ``850 ms``, ``1.2 s``."""
    return "" if value is None else charts.format_ms(float(value))


@register.filter
def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


@register.filter
def span(value: timedelta) -> str:
    """A timedelta as Django's timesince words: ``20 minutes``."""
    now = timezone.now()
    return timesince(now - value, now)


@register.simple_tag(takes_context=True)
def query(context: template.Context, **changes: Any) -> str:
    """The current query string with ``changes`` applied (None or '' drops a key)."""
    request = context.get("request")
    params = request.GET.copy() if request is not None else QueryDict(mutable=True)
    params.pop("partial", None)
    for key, value in changes.items():
        if value in (None, ""):
            params.pop(key, None)
        else:
            params[key] = str(value)
    encoded = params.urlencode()
    return f"?{encoded}" if encoded else "?"


# -- the matrix ------------------------------------------------------------


def _links(context: template.Context) -> html.Links:
    """One ``Links`` per render, shared by every tag in the page."""
    links = context.render_context.get("kong_links")
    if links is None:
        links = context.render_context["kong_links"] = html.Links()
    return links


@register.simple_tag(takes_context=True)
def matrix_rows(context: template.Context, rows: Sequence[dashboard.Row]) -> SafeString:
    """The fleet matrix's ``<tr>``s (``kong.dashboard.html.matrix_rows``)."""
    return html.matrix_rows(_links(context), rows)


@register.simple_tag(takes_context=True)
def failing_rows(context: template.Context, checks: Sequence[dashboard.CheckState]) -> SafeString:
    """The "Failing now" table's rows (``kong.dashboard.html.failing_rows``)."""
    return html.failing_rows(_links(context), checks)


@register.simple_tag(takes_context=True)
def history_url(context: template.Context, check: dashboard.CheckState) -> str:
    return _links(context).for_history(check.site.slug, check.test.slug)


@register.simple_tag(takes_context=True)
def test_url(context: template.Context, test: dashboard.Ref) -> str:
    return _links(context).for_test(test.slug)


# -- charts and the banner -------------------------------------------------


@register.simple_tag
def sparkline(points: Sequence[dashboard.Point] | None, title: str = "") -> SafeString:
    return charts.sparkline(html.samples(points or []), title=title)


@register.inclusion_tag("kong/_runner_banner.html")
def runner_banner() -> dict[str, Any]:
    """The "checks last ran 23 minutes ago" banner, when the runner looks stopped."""
    return {"staleness": dashboard.runner_staleness()}


@register.simple_tag(takes_context=True)
def duration_chart(
    context: template.Context, points: Sequence[dashboard.Point], page: Any = None, title: str = "Duration"
) -> SafeString:
    """The history chart; shades the span of ``page`` (the results listed below it)."""
    listed = list(page.object_list) if page is not None else []
    highlight = (listed[-1].run_date, listed[0].run_date) if listed else None
    return charts.duration_chart(html.samples(points, _links(context)), title=title, highlight=highlight)


@register.simple_tag
def daily_chart(days: Sequence[charts.Day], title: str = "Daily duration and pass rate") -> SafeString:
    """The daily history chart (``kong.rollups.DayStats`` per day, oldest first)."""
    return charts.daily_chart(days, title=title)


@register.simple_tag
def comparison_chart(series: Sequence[tuple[str, Sequence[dashboard.Point]]], title: str = "") -> SafeString:
    return charts.comparison_chart([charts.Series(name, html.samples(points)) for name, points in series], title=title)


@register.simple_tag
def swatch(index: int) -> SafeString:
    return charts.swatch(index)


@register.filter
def masked(text: str, site: Site) -> str:
    """``text`` with the site's secret variable values masked."""
    return mask(str(text or ""), site.secret_values())


@register.filter
def is_http(url: str) -> bool:
    """Only http(s) addresses become links (never ``javascript:``)."""
    return str(url).lower().startswith(("http://", "https://"))
