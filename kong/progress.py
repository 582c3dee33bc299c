"""A one-line progress bar with a count and ETA, for terminals only.

On a TTY ``check_sites`` redraws one line in place::

    [##########..........]  120/400  30%  ETA 0:14  ljworld/front-page

and prints each failure as a plain line above it. When output is not a
terminal (cron, a pipe, a CI log) the bar draws nothing at all, so cron mail
holds only plain failure lines and the summary.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Any

from django.core.management.base import OutputWrapper

CLEAR_LINE = "\r\033[K"


class ProgressBar:
    """Draws ``done/total``, percent and ETA on one terminal line.

    ``update()`` redraws at most every ``min_interval`` seconds (and always
    for the last item); ``line()`` prints a line above the bar; ``clear()``
    erases the bar. On a stream that is not a TTY every method is a no-op
    except ``line``, which prints plainly. The ETA is the mean time per item
    so far times the items left.
    """

    def __init__(
        self,
        stream: Any,
        *,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_interval: float = 0.1,
        width: int | None = None,
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.clock = clock
        self.started = clock()
        self.min_interval = min_interval
        self.width = width
        self.drawn_at: float | None = None
        self.visible = False

    def update(self, done: int, total: int, label: str = "") -> None:
        if not self.tty:
            return
        now = self.clock()
        if done < total and self.drawn_at is not None and now - self.drawn_at < self.min_interval:
            return
        self.drawn_at = now
        self._write(CLEAR_LINE + self.render(done, total, label, now))
        self.visible = True

    def line(self, text: str) -> None:
        """Print ``text`` on its own line, above the bar."""
        self._write((CLEAR_LINE if self.visible else "") + text + "\n")
        self.visible = False
        self.drawn_at = None  # redraw the bar on the next update

    def clear(self) -> None:
        if self.visible:
            self._write(CLEAR_LINE)
            self.visible = False

    def render(self, done: int, total: int, label: str = "", now: float | None = None) -> str:
        """The bar's text, cut to the terminal width."""
        elapsed = (self.clock() if now is None else now) - self.started
        fraction = done / total if total else 1.0
        eta = elapsed / done * (total - done) if done else None
        cells = 20
        filled = round(fraction * cells)
        text = (
            f"[{'#' * filled}{'.' * (cells - filled)}]  {done}/{total}  {fraction:4.0%}"
            f"  ETA {_clock(eta)}  {label}"
        )
        width = self.width or shutil.get_terminal_size((80, 24)).columns
        return text[: max(10, width - 1)].rstrip()

    def _write(self, text: str) -> None:
        if isinstance(self.stream, OutputWrapper):
            self.stream.write(text, ending="")  # it would add a newline
        else:
            self.stream.write(text)
        self.stream.flush()


class CheckProgress:
    """``on_result(report, done, total)`` for ``services.run_checks``: a bar
    on a terminal and each failure as a plain line (``failure_line(report)``)
    everywhere."""

    def __init__(
        self,
        stream: Any,
        *,
        label: Callable[[Any], str],
        failure_line: Callable[[Any], str],
        tty: bool | None = None,
    ) -> None:
        self.bar = ProgressBar(stream, tty=tty)
        self.label = label
        self.failure_line = failure_line

    def __call__(self, report: Any, done: int, total: int) -> None:
        if not report.succeeded:
            self.bar.line(self.failure_line(report))
        self.bar.update(done, total, self.label(report))


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
