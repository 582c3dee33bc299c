"""Server-side SVG charts: sparklines, a duration chart, a comparison chart
and a daily history chart.

Hand-written inline SVG, so pages need no JavaScript and no chart library.
Every text that reaches the markup is escaped. Charts carry ``<title>`` and
``<desc>`` for screen readers; failures are drawn as crosses, not only in
another colour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as clock_time
from typing import Protocol

from django.utils import timezone
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#000000", "#f0e442")
DASHES = ("", "6 3", "2 3", "8 3 2 3")
FAIL_COLOUR = "#c62828"
LINE_COLOUR = "#37474f"


@dataclass(frozen=True)
class Sample:
    """One value on a chart: when, how long (ms), and whether it failed."""

    when: datetime
    value: float
    failed: bool = False
    label: str = ""
    href: str = ""
    status: str = ""


@dataclass(frozen=True)
class Series:
    name: str
    samples: Sequence[Sample] = field(default_factory=tuple)


def format_ms(value: float) -> str:
    """``850 ms``, ``1.2 s``, ``2 min``."""
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 60_000:
        return f"{value / 1000:.1f} s"
    return f"{value / 60_000:.1f} min"


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten that is at least ``value`` (1 for 0)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return float(step * magnitude)
    return float(10 * magnitude)  # pragma: no cover - the loop always returns


def _timestamp(when: datetime) -> float:
    return when.timestamp()


def _local(when: datetime) -> datetime:
    # One timezone lookup per call is cheap; charts call this for a few labels only.
    return when.astimezone(timezone.get_current_timezone()) if when.tzinfo else when


def _when(when: datetime) -> str:
    return f"{_local(when):%Y-%m-%d %H:%M:%S}"


def _short_when(when: datetime) -> str:
    return f"{_local(when):%b %d %H:%M}"


class _Frame:
    """Maps times and durations onto a plot area."""

    def __init__(
        self,
        samples: Sequence[Sample],
        left: float,
        top: float,
        right: float,
        bottom: float,
        *,
        zero: bool = True,
    ) -> None:
        times = [_timestamp(sample.when) for sample in samples]
        values = [sample.value for sample in samples]
        self.start, self.end = min(times), max(times)
        # Charts with axes start at zero; a sparkline spans its own range to show the wiggle.
        self.floor = 0.0 if zero else min(values)
        self.top_value = nice_ceiling(max(values)) if zero else max(values)
        self.left, self.top, self.right, self.bottom = left, top, right, bottom

    def x(self, when: datetime) -> float:
        if self.end == self.start:
            return (self.left + self.right) / 2
        share = (_timestamp(when) - self.start) / (self.end - self.start)
        return round(self.left + share * (self.right - self.left), 1)

    def y(self, value: float) -> float:
        spread = self.top_value - self.floor
        if spread <= 0:
            return round((self.top + self.bottom) / 2, 1)
        share = (min(max(value, self.floor), self.top_value) - self.floor) / spread
        return round(self.bottom - share * (self.bottom - self.top), 1)


def _cross(x: float, y: float, size: float, colour: str = FAIL_COLOUR) -> str:
    return (
        f'<path d="M{x - size} {y - size}L{x + size} {y + size}M{x - size} {y + size}L{x + size} {y - size}" '
        f'stroke="{colour}" stroke-width="2" stroke-linecap="round"/>'
    )


def _polyline(frame: _Frame, samples: Sequence[Sample], colour: str, width: float, dash: str = "") -> str:
    coordinates = " ".join(f"{frame.x(sample.when)},{frame.y(sample.value)}" for sample in samples)
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<polyline points="{coordinates}" fill="none" stroke="{colour}" stroke-width="{width}"'
        f' stroke-linejoin="round"{dashed}/>'
    )


def _marker(frame: _Frame, sample: Sample, *, radius: float, colour: str) -> str:
    x, y = frame.x(sample.when), frame.y(sample.value)
    if sample.failed:
        shape = _cross(x, y, radius + 1)
        words = "failed"
    else:
        shape = f'<circle cx="{x}" cy="{y}" r="{radius}" fill="{colour}"/>'
        words = "passed"
    text = sample.label or f"{_when(sample.when)}: {sample.status or words}, {format_ms(sample.value)}"
    body = f"<title>{escape(text)}</title>{shape}"
    if sample.href:
        return f'<a href="{escape(sample.href)}" class="k-chart-point">{body}</a>'
    return f'<g class="k-chart-point">{body}</g>'


def _open_svg(chart_id: str, width: int, height: int, title: str, desc: str, css: str) -> str:
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="{}" viewBox="0 0 {} {}" width="{}" height="{}" '
        'role="img" aria-labelledby="{}-title {}-desc"><title id="{}-title">{}</title>'
        '<desc id="{}-desc">{}</desc>',
        css, width, height, width, height, chart_id, chart_id, chart_id, title, chart_id, desc,
    )  # fmt: skip


def sparkline(samples: Sequence[Sample], *, width: int = 120, height: int = 28, title: str = "") -> SafeString:
    """A small line of durations with failures crossed out; '' when empty."""
    if not samples:
        return mark_safe("")
    failures = sum(sample.failed for sample in samples)
    summary = (
        f"{len(samples)} runs, {failures} failed, "
        f"{format_ms(min(s.value for s in samples))} to {format_ms(max(s.value for s in samples))}"
    )
    frame = _Frame(samples, 4, 4, width - 4, height - 4, zero=False)
    parts = [
        format_html(
            '<svg xmlns="http://www.w3.org/2000/svg" class="k-sparkline" viewBox="0 0 {} {}" width="{}" '
            'height="{}" role="img"><title>{}</title>',
            width, height, width, height, f"{title}: {summary}" if title else summary,
        ),
        _polyline(frame, samples, LINE_COLOUR, 1.2),
    ]
    parts += [_cross(frame.x(s.when), frame.y(s.value), 2.5) for s in samples if s.failed]
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every text went through escape or format_html


def _grid(frame: _Frame, left: float | None = None, right: float | None = None) -> list[str]:
    """Horizontal grid lines at zero, half and the top value, labelled on the
    left; from ``left`` to ``right`` (default: the frame's plot area)."""
    left = frame.left if left is None else left
    right = frame.right if right is None else right
    parts = []
    for share in (0, 0.5, 1):
        value = frame.top_value * share
        y = frame.y(value)
        parts.append(
            f'<line x1="{left}" x2="{right}" y1="{y}" y2="{y}" class="k-chart-grid" '
            f'stroke="#cfd8dc" stroke-width="1"/>'
            f'<text x="{left - 6}" y="{y + 4}" text-anchor="end" class="k-chart-label">'
            f"{escape(format_ms(value))}</text>"
        )
    return parts


def _axes(frame: _Frame, width: int, height: int) -> list[str]:
    parts = _grid(frame)
    start = datetime.fromtimestamp(frame.start, tz=timezone.get_current_timezone())
    end = datetime.fromtimestamp(frame.end, tz=timezone.get_current_timezone())
    parts.append(
        f'<text x="{frame.left}" y="{height - 6}" class="k-chart-label">{escape(_short_when(start))}</text>'
        f'<text x="{frame.right}" y="{height - 6}" text-anchor="end" class="k-chart-label">'
        f"{escape(_short_when(end))}</text>"
    )
    return parts


def duration_chart(
    samples: Sequence[Sample],
    *,
    chart_id: str = "kong-duration",
    title: str = "Duration",
    width: int = 760,
    height: int = 220,
    highlight: tuple[datetime, datetime] | None = None,
) -> SafeString:
    """Durations over time as a line, failures as red crosses; '' when empty.

    ``highlight`` shades a time span (the results listed below the chart).
    """
    if not samples:
        return mark_safe("")
    failures = [sample for sample in samples if sample.failed]
    desc = (
        f"{len(samples)} runs from {_when(samples[0].when)} to {_when(samples[-1].when)}; "
        f"{len(failures)} failed; slowest {format_ms(max(s.value for s in samples))}."
    )
    frame = _Frame(samples, 64, 12, width - 12, height - 26)
    parts = [_open_svg(chart_id, width, height, title, desc, "k-chart"), *_axes(frame, width, height)]
    if highlight:
        x1, x2 = sorted((frame.x(highlight[0]), frame.x(highlight[1])))
        parts.append(
            f'<rect x="{x1 - 3}" y="{frame.top}" width="{x2 - x1 + 6}" height="{frame.bottom - frame.top}" '
            f'fill="#fff59d" fill-opacity="0.5" class="k-chart-page"><title>results listed below</title></rect>'
        )
    parts.append(_polyline(frame, samples, LINE_COLOUR, 1.5))
    # Every point gets a marker (and a link) while they stay readable; failures always do.
    shown = samples if len(samples) <= 120 else failures
    parts += [_marker(frame, sample, radius=2.5, colour=LINE_COLOUR) for sample in shown]
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every text went through escape or format_html


def bucketed(samples: Sequence[Sample], start: float, end: float, buckets: int) -> list[Sample]:
    """Mean duration per time bucket (like django-kong's graph_test); a bucket
    with any failure is marked failed."""
    if not samples:
        return []
    span = max(end - start, 1e-9)
    groups: dict[int, list[Sample]] = {}
    for sample in samples:
        index = min(buckets - 1, int((_timestamp(sample.when) - start) / span * buckets))
        groups.setdefault(index, []).append(sample)
    out = []
    for index in sorted(groups):
        group = groups[index]
        failed = sum(sample.failed for sample in group)
        mean = sum(sample.value for sample in group) / len(group)
        # Only crossed buckets get a marker, so only they need a label.
        label = (
            f"{_when(group[0].when)} to {_when(group[-1].when)}: {len(group)} runs, "
            f"{failed} failed, mean {format_ms(mean)}"
            if failed
            else ""
        )
        out.append(Sample(when=group[len(group) // 2].when, value=mean, failed=bool(failed), label=label))
    return out


def series_style(index: int) -> tuple[str, str]:
    """The colour and dash pattern of the ``index``-th series."""
    return PALETTE[index % len(PALETTE)], DASHES[(index // len(PALETTE)) % len(DASHES)]


def comparison_chart(
    series: Sequence[Series],
    *,
    chart_id: str = "kong-comparison",
    title: str = "Duration by site",
    width: int = 760,
    height: int = 260,
    buckets: int = 50,
) -> SafeString:
    """One line per series (mean duration per time bucket); '' when no data.

    Lines differ in colour and, past eight series, in dash pattern; each
    carries its name as a ``<title>``.
    """
    everything = [sample for one in series for sample in one.samples]
    if not everything:
        return mark_safe("")
    start = min(_timestamp(sample.when) for sample in everything)
    end = max(_timestamp(sample.when) for sample in everything)
    reduced = [Series(one.name, bucketed(one.samples, start, end, buckets)) for one in series]
    frame = _Frame([sample for one in reduced for sample in one.samples], 64, 12, width - 12, height - 26)
    desc = f"Mean duration of {len(series)} sites in {buckets} time buckets; crosses mark buckets with failures."
    parts = [_open_svg(chart_id, width, height, title, desc, "k-chart"), *_axes(frame, width, height)]
    for index, one in enumerate(reduced):
        if not one.samples:
            continue
        colour, dash = series_style(index)
        parts.append(f'<g class="k-chart-series"><title>{escape(one.name)}</title>')
        parts.append(_polyline(frame, one.samples, colour, 1.8, dash))
        parts += [_marker(frame, sample, radius=1.8, colour=colour) for sample in one.samples if sample.failed]
        parts.append("</g>")
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every text went through escape or format_html


def swatch(index: int) -> SafeString:
    """A legend key for the ``index``-th series of a comparison chart."""
    colour, dash = series_style(index)
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    return mark_safe(  # only constants
        f'<svg xmlns="http://www.w3.org/2000/svg" class="k-swatch" viewBox="0 0 24 8" width="24" height="8" '
        f'aria-hidden="true"><line x1="0" y1="4" x2="24" y2="4" stroke="{colour}" stroke-width="3"{dashed}/></svg>'
    )


# -- daily history -------------------------------------------------------------


class Day(Protocol):
    """One day of a check's history, as ``kong.rollups.DayStats`` provides it."""

    @property
    def day(self) -> date: ...
    @property
    def runs(self) -> int: ...
    @property
    def failures(self) -> int: ...
    @property
    def mean_duration(self) -> float: ...
    @property
    def p95_duration(self) -> float: ...


MEAN_COLOUR, P95_COLOUR, P95_DASH = PALETTE[0], PALETTE[1], "6 3"
PASS_COLOUR = "#90a4ae"


def _day_text(day: Day) -> str:
    passed = 100.0 * (day.runs - day.failures) / day.runs
    return (
        f"{day.day:%Y-%m-%d}: {day.runs} run{'s' if day.runs != 1 else ''}, {day.failures} failed "
        f"({passed:.1f}% passed), mean {format_ms(day.mean_duration)}, p95 {format_ms(day.p95_duration)}"
    )


def _segments(days: Sequence[Day]) -> list[list[Day]]:
    """Runs of consecutive days that have runs: lines break at days without any."""
    segments: list[list[Day]] = [[]]
    for day in days:
        if day.runs:
            segments[-1].append(day)
        elif segments[-1]:
            segments.append([])
    return [segment for segment in segments if segment]


def daily_chart(
    days: Sequence[Day],
    *,
    chart_id: str = "kong-daily",
    title: str = "Daily duration and pass rate",
    width: int = 760,
    height: int = 250,
) -> SafeString:
    """Per day, oldest first: the mean duration (solid line) and p95 (dashed)
    above, the share of runs that passed as a bar below, and a red cross over
    the bar of every day with a failure; '' when no day has runs.

    Each day with runs carries a ``<title>`` ("2026-01-05: 48 runs, 2 failed
    (95.8% passed), mean 120 ms, p95 300 ms"); days without runs break the
    lines and draw nothing.
    """
    active = [day for day in days if day.runs]
    if not active:
        return mark_safe("")
    left, right = 64.0, width - 12.0
    slot = (right - left) / len(days)
    # A day's point sits in the middle of its slot; _Frame spans the first to the last point.
    noon = [datetime.combine(day.day, clock_time(12), tzinfo=UTC) for day in days]
    when = dict(zip((day.day for day in days), noon, strict=True))
    frame = _Frame(
        [Sample(moment, day.p95_duration) for moment, day in zip(noon, days, strict=True)],
        left + slot / 2, 22, right - slot / 2, height - 76,
    )  # fmt: skip
    strip_top, strip_bottom = height - 62.0, height - 30.0
    failed_days = [day for day in active if day.failures]
    runs, failures = sum(day.runs for day in active), sum(day.failures for day in active)
    desc = (
        f"{len(days)} days from {days[0].day:%Y-%m-%d} to {days[-1].day:%Y-%m-%d}: {runs} runs on "
        f"{len(active)} days, {failures} failed on {len(failed_days)} days. Mean (solid) and p95 (dashed) "
        f"duration per day above, the share of runs that passed below; crosses mark days with failures."
    )
    parts = [_open_svg(chart_id, width, height, title, desc, "k-chart-daily"), *_grid(frame, left, right)]
    parts.append(
        f'<line x1="{left}" x2="{right}" y1="{strip_bottom}" y2="{strip_bottom}" stroke="#cfd8dc" stroke-width="1"/>'
        f'<text x="{left - 6}" y="{strip_top + 8}" text-anchor="end" class="k-chart-label">100%</text>'
        f'<text x="{left - 6}" y="{strip_bottom}" text-anchor="end" class="k-chart-label">passed</text>'
        f'<line x1="{right - 150}" x2="{right - 130}" y1="8" y2="8" stroke="{MEAN_COLOUR}" stroke-width="2"/>'
        f'<text x="{right - 126}" y="12" class="k-chart-label">mean</text>'
        f'<line x1="{right - 80}" x2="{right - 60}" y1="8" y2="8" stroke="{P95_COLOUR}" stroke-width="2" '
        f'stroke-dasharray="{P95_DASH}"/><text x="{right - 56}" y="12" class="k-chart-label">p95</text>'
        f'<text x="{left}" y="{height - 6}" class="k-chart-label">{days[0].day:%Y-%m-%d}</text>'
        f'<text x="{right}" y="{height - 6}" text-anchor="end" class="k-chart-label">{days[-1].day:%Y-%m-%d}</text>'
    )
    for segment in _segments(days):
        for value, colour, dash in (("mean_duration", MEAN_COLOUR, ""), ("p95_duration", P95_COLOUR, P95_DASH)):
            line = [Sample(when[day.day], getattr(day, value)) for day in segment]
            if len(line) == 1:  # a lone day has no line to be part of
                parts.append(
                    f'<circle cx="{frame.x(line[0].when)}" cy="{frame.y(line[0].value)}" r="2" fill="{colour}"/>'
                )
            else:
                parts.append(_polyline(frame, line, colour, 1.5, dash))
    bar = max(slot - 1, 0.8)
    cross = max(1.5, min(3.5, slot / 2))
    for day in active:
        x = frame.x(when[day.day])
        passed_height = round((strip_bottom - strip_top) * (day.runs - day.failures) / day.runs, 1)
        parts.append(
            f'<g class="k-chart-day{" k-chart-day-failed" if day.failures else ""}">'
            f"<title>{escape(_day_text(day))}</title>"
            f'<rect x="{round(x - slot / 2, 1)}" y="{frame.top}" width="{round(slot, 2)}" '
            f'height="{strip_bottom - frame.top}" fill="transparent"/>'
            f'<rect x="{round(x - bar / 2, 1)}" y="{strip_bottom - passed_height}" width="{round(bar, 2)}" '
            f'height="{passed_height}" fill="{PASS_COLOUR}"/>'
        )
        if day.failures:
            parts.append(_cross(x, strip_top - cross - 2, cross))
        parts.append("</g>")
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every text went through escape or format_html, or is a number or date
