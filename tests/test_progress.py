"""kong.progress: a bar with a count and ETA on a terminal, nothing under cron."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from kong.progress import CLEAR_LINE, CheckProgress, ProgressBar
from kong.services import CheckReport
from tests.factories import make_site, make_test


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def report(site: str, status: str = "passed") -> CheckReport:
    return CheckReport(
        "front", site, None, status, status == "passed", 12.0, None, "" if status == "passed" else "boom"
    )


def test_the_bar_shows_count_percent_and_eta():
    clock = Clock()
    bar = ProgressBar(Terminal(), clock=clock, width=200)
    clock.now += 10
    assert (
        bar.render(100, 400, "ljworld/front")
        == "[#####...............]  100/400   25%  ETA 0:30  ljworld/front"
    )
    assert bar.render(0, 400).startswith("[....................]  0/400    0%  ETA --:--")
    clock.now += 3600
    assert "ETA 3:00:30" in bar.render(100, 400)  # 36.1 s an item, 300 to go


def test_the_bar_fits_the_terminal():
    assert len(ProgressBar(Terminal(), width=30).render(1, 3, "x" * 100)) <= 29


def test_redraws_are_throttled_but_the_last_one_always_shows():
    clock = Clock()
    screen = Terminal()
    bar = ProgressBar(screen, clock=clock)
    for done in range(1, 50):
        bar.update(done, 50)
    assert screen.getvalue().count(CLEAR_LINE) == 1
    bar.update(50, 50)
    assert screen.getvalue().count(CLEAR_LINE) == 2
    assert "50/50" in screen.getvalue()


def test_failures_print_above_the_bar_and_clear_erases_it():
    screen = Terminal()
    progress = CheckProgress(
        screen, label=lambda item: item.site, failure_line=lambda item: f"FAIL {item.site}"
    )
    progress(report("one"), 1, 3)
    progress(report("two", "failed"), 2, 3)
    assert screen.getvalue().endswith(
        f"{CLEAR_LINE}FAIL two\n{CLEAR_LINE}[#############.......]  2/3   67%  ETA 0:00  two"
    )
    progress.bar.clear()
    assert screen.getvalue().endswith(CLEAR_LINE)


def test_without_a_terminal_only_failures_are_printed_plainly():
    out = io.StringIO()
    progress = CheckProgress(out, label=lambda item: item.site, failure_line=lambda item: f"FAIL {item.site}")
    for done, item in enumerate([report("one"), report("two", "failed"), report("three")], 1):
        progress(item, done, 3)
    progress.bar.clear()
    assert out.getvalue() == "FAIL two\n"


@pytest.mark.django_db
def test_check_sites_under_cron_prints_no_terminal_codes(web):
    site = make_site(servername=web.host)
    make_test(body="go {{ site.url }}\ncode 200", sites=[site])
    make_test("missing", body="go {{ site.url }}/nope\ncode 200", sites=[site])
    out = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("check_sites", "--workers", "0", stdout=out)
    assert "\r" not in out.getvalue()
    assert "\033" not in out.getvalue()
    assert out.getvalue().splitlines()[0].strip().startswith("FAIL  ljworld/missing")


@pytest.mark.django_db
def test_check_sites_on_a_terminal_draws_the_bar(web):
    site = make_site(servername=web.host)
    make_test(body="go {{ site.url }}\ncode 200", sites=[site])
    screen = Terminal()
    call_command("check_sites", "--workers", "0", stdout=screen)
    assert "1/1  100%" in screen.getvalue()
    assert f"{CLEAR_LINE}1 check: 1 passed, 0 failed in " in screen.getvalue()  # the bar erased first
