"""kong.dashboard.charts: server-side SVG, escaped and accessible."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from xml.etree import ElementTree as ET

import pytest

from kong.dashboard import charts
from kong.dashboard.charts import Sample, Series
from kong.rollups import DayStats

SVG = "{http://www.w3.org/2000/svg}"
START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def run(minutes: int, value: float, failed: bool = False, **fields: str) -> Sample:
    return Sample(when=START + timedelta(minutes=minutes), value=value, failed=failed, **fields)


def parse(svg: str) -> ET.Element:
    """The markup must be well-formed XML (it is inlined in HTML pages)."""
    return ET.fromstring(svg)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 1.0), (0.3, 0.5), (1, 1), (180, 200), (201, 250), (260, 500), (999, 1000), (1001, 2000)],
)
def test_nice_ceiling(value, expected):
    assert charts.nice_ceiling(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [(0, "0 ms"), (850.4, "850 ms"), (1234, "1.2 s"), (90_000, "1.5 min")]
)
def test_format_ms(value, expected):
    assert charts.format_ms(value) == expected


def test_empty_charts_render_nothing():
    assert charts.sparkline([]) == ""
    assert charts.duration_chart([]) == ""
    assert charts.comparison_chart([Series("a", [])]) == ""


def test_sparkline_draws_the_line_and_crosses_failures():
    svg = charts.sparkline([run(0, 100), run(10, 300, failed=True), run(20, 200)], title="Front page")
    root = parse(svg)
    line = root.find(f"{SVG}polyline")
    assert line is not None
    points = [tuple(map(float, pair.split(","))) for pair in line.get("points", "").split()]
    assert len(points) == 3
    xs, ys = zip(*points, strict=True)
    assert xs == tuple(sorted(xs)), "time runs left to right"
    assert ys[1] < ys[2] < ys[0], "slower runs are drawn higher"
    assert len(root.findall(f"{SVG}path")) == 1, "one cross for the one failure"
    assert root.findtext(f"{SVG}title") == "Front page: 3 runs, 1 failed, 100 ms to 300 ms"


def test_a_single_point_is_centred():
    root = parse(charts.sparkline([run(0, 100)]))
    assert root.find(f"{SVG}polyline").get("points") == "60.0,14.0"


def test_duration_chart_is_accessible_and_marks_failures():
    samples = [run(0, 120), run(10, 480, failed=True, href="/kong/result/2/"), run(20, 130)]
    root = parse(charts.duration_chart(samples, chart_id="c1", title="Duration of each run"))
    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == "c1-title c1-desc"
    assert root.find(f"{SVG}title").text == "Duration of each run"
    assert "3 runs" in root.find(f"{SVG}desc").text
    assert "1 failed" in root.find(f"{SVG}desc").text
    links = root.findall(f"{SVG}a")
    assert [link.get("href") for link in links] == ["/kong/result/2/"]
    assert links[0].find(f"{SVG}path").get("stroke") == charts.FAIL_COLOUR, "failures are crosses, not dots"
    labels = [text.text for text in root.iter(f"{SVG}text")]
    assert labels[:3] == ["0 ms", "250 ms", "500 ms"]


def test_duration_chart_shades_the_listed_page():
    samples = [run(minute, 100) for minute in range(0, 100, 10)]
    root = parse(charts.duration_chart(samples, highlight=(samples[5].when, samples[9].when)))
    shade = root.find(f"{SVG}rect")
    assert shade is not None
    assert float(shade.get("x")) > 300


def test_every_text_is_escaped():
    hostile = '<script>alert(1)</script>"'
    samples = [run(0, 100, label=hostile, href='/x?a=1&b="2"'), run(5, 100, failed=True, label=hostile)]
    for svg in (
        charts.sparkline(samples, title=hostile),
        charts.duration_chart(samples, title=hostile),
        charts.comparison_chart([Series(hostile, samples)], title=hostile),
        charts.daily_chart([DayStats(date(2026, 1, 1), 2, 1, 100, 200, 200)], title=hostile),
    ):
        assert "<script>" not in svg
        parse(svg)  # still well-formed
    chart = charts.duration_chart(samples, title=hostile)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in chart
    assert 'href="/x?a=1&amp;b=&quot;2&quot;"' in chart


def test_bucketed_averages_and_flags_failures():
    samples = [run(0, 100), run(1, 300, failed=True), run(50, 50)]
    start, end = samples[0].when.timestamp(), samples[-1].when.timestamp()
    buckets = charts.bucketed(samples, start, end, buckets=10)
    assert [bucket.value for bucket in buckets] == [200, 50]
    assert [bucket.failed for bucket in buckets] == [True, False]
    assert "2 runs, 1 failed, mean 200 ms" in buckets[0].label


def test_comparison_chart_draws_one_series_per_site():
    alpha = Series("Alpha", [run(minute, 100 + minute) for minute in range(0, 60, 5)])
    bravo = Series("Bravo", [run(minute, 300, failed=minute == 30) for minute in range(0, 60, 5)])
    root = parse(charts.comparison_chart([alpha, bravo], buckets=6))
    groups = root.findall(f"{SVG}g")
    assert [group.findtext(f"{SVG}title") for group in groups] == ["Alpha", "Bravo"]
    colours = [group.find(f"{SVG}polyline").get("stroke") for group in groups]
    assert colours == [charts.PALETTE[0], charts.PALETTE[1]]
    assert len(groups[0].find(f"{SVG}polyline").get("points").split()) == 6
    assert len(groups[1].findall(f".//{SVG}path")) == 1, "the bucket with a failure is crossed"


def test_series_past_the_palette_get_dashes():
    assert charts.series_style(0) == (charts.PALETTE[0], "")
    colour, dash = charts.series_style(len(charts.PALETTE))
    assert colour == charts.PALETTE[0]
    assert dash
    assert re.search(r'stroke-dasharray="[\d ]+"', charts.swatch(len(charts.PALETTE)))


# -- the daily history chart ---------------------------------------------------


def days_of(*specs: tuple[int, int, float, float]) -> list[DayStats]:
    """One DayStats per (runs, failures, mean, p95), on consecutive days from 2026-01-01."""
    first = date(2026, 1, 1)
    return [
        DayStats(first + timedelta(days=index), runs, failures, mean, p95, p95)
        for index, (runs, failures, mean, p95) in enumerate(specs)
    ]


def test_daily_chart_is_empty_without_runs():
    assert charts.daily_chart([]) == ""
    assert charts.daily_chart(days_of((0, 0, 0, 0), (0, 0, 0, 0))) == ""


def test_daily_chart_titles_each_day_and_crosses_days_with_failures():
    days = days_of((48, 0, 100, 150), (48, 3, 120, 480), (0, 0, 0, 0), (1, 1, 900, 900), (24, 0, 110, 200))
    root = parse(charts.daily_chart(days, chart_id="d1", title="Daily"))
    assert root.get("role") == "img"
    assert root.get("class") == "k-chart-daily"
    assert root.get("aria-labelledby") == "d1-title d1-desc"
    assert root.find(f"{SVG}title").text == "Daily"
    desc = root.find(f"{SVG}desc").text
    assert "5 days from 2026-01-01 to 2026-01-05" in desc
    assert "121 runs on 4 days, 4 failed on 2 days" in desc
    groups = root.findall(f"{SVG}g")
    assert [group.findtext(f"{SVG}title") for group in groups] == [
        "2026-01-01: 48 runs, 0 failed (100.0% passed), mean 100 ms, p95 150 ms",
        "2026-01-02: 48 runs, 3 failed (93.8% passed), mean 120 ms, p95 480 ms",
        "2026-01-04: 1 run, 1 failed (0.0% passed), mean 900 ms, p95 900 ms",
        "2026-01-05: 24 runs, 0 failed (100.0% passed), mean 110 ms, p95 200 ms",
    ], "a day without runs has no title"
    crossed = [group.findtext(f"{SVG}title")[:10] for group in groups if group.find(f"{SVG}path") is not None]
    assert crossed == ["2026-01-02", "2026-01-04"]
    assert all(path.get("stroke") == charts.FAIL_COLOUR for path in root.iter(f"{SVG}path"))
    bars = [float(group.findall(f"{SVG}rect")[1].get("height")) for group in groups]
    assert bars[0] == bars[3] > bars[1] > bars[2] == 0, "bars show the share of runs that passed"


def test_daily_chart_breaks_its_lines_at_days_without_runs():
    days = days_of((10, 0, 100, 200), (10, 0, 300, 400), (0, 0, 0, 0), (10, 0, 100, 200))
    root = parse(charts.daily_chart(days))
    lines = root.findall(f"{SVG}polyline")
    assert [line.get("stroke") for line in lines] == [charts.MEAN_COLOUR, charts.P95_COLOUR]
    assert lines[1].get("stroke-dasharray") == charts.P95_DASH
    mean = [tuple(map(float, pair.split(","))) for pair in lines[0].get("points").split()]
    p95 = [tuple(map(float, pair.split(","))) for pair in lines[1].get("points").split()]
    assert len(mean) == len(p95) == 2, "the first two days, then a gap"
    assert mean[1][1] < mean[0][1], "the slower day is drawn higher"
    assert all(high[1] < low[1] for high, low in zip(p95, mean, strict=True)), "p95 above the mean"
    lone = root.findall(f"{SVG}circle")
    assert [circle.get("fill") for circle in lone] == [charts.MEAN_COLOUR, charts.P95_COLOUR]
    assert float(lone[0].get("cx")) > mean[1][0], "the lone last day after the gap"
