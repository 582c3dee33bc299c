"""Output formats for check_sites: text lines, JSON, Nagios, JUnit XML."""

from __future__ import annotations

import json
from itertools import groupby
from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

from kong.masking import mask
from kong.services import CheckReport, RunReport
from kong.status import SYMBOLS, Status

if TYPE_CHECKING:
    from kong.engine.scripts import ScriptError
    from kong.models import Check

CLEAR_LINE = "\r\033[K"  # erases a terminal's live progress counter


def label(item: CheckReport) -> str:
    text = f"{item.site}/{item.test}"
    return f"{text}@{item.server}" if item.server else text


def text_line(item: CheckReport) -> str:
    line = f"{SYMBOLS.get(item.status, item.status):>7}  {label(item)}  ({item.duration_ms:.0f} ms)"
    return f"{line}  {item.reason}" if item.reason else line


def summary(report: RunReport) -> str:
    total = len(report.results)
    return (
        f"{total} check{'s' if total != 1 else ''}: {report.passed} passed, "
        f"{report.failed} failed in {report.duration_ms / 1000:.1f} s"
    )


def list_line(check: Check) -> str:
    """``site/test<TAB>schedule<TAB>status``, as ``check_sites --list`` prints it."""
    return f"{check.label}\t{check.test.schedule}\t{check.status}"


def dry_run_line(check: Check, error: ScriptError | None) -> str:
    """``  ok  site/test`` or ``invalid  site/test  line N: reason``. The reason
    may quote the rendered line, so the site's secrets are masked: this line
    goes to CI and cron logs."""
    line = f"{'invalid' if error else 'ok':>7}  {check.label}"
    return f"{line}  {mask(str(error), check.site.secret_values())}" if error else line


def text_lines(report: RunReport, *, quiet: bool = False, verbose: bool = False) -> list[str]:
    """The end of a text run: passing lines when ``verbose``, failing lines
    when ``quiet`` (progress printed them otherwise), then the summary.
    Nothing at all when ``quiet`` and everything passed, or when nothing
    ran (a ``--due`` tick with nothing due must not make cron mail)."""
    if (quiet and not report.failed) or not report.results:
        return []
    lines = [text_line(item) for item in report.results if item.succeeded] if verbose else []
    if quiet:
        lines += [text_line(item) for item in report.results if not item.succeeded]
    return [*lines, summary(report)]


def render(report: RunReport, format: str, *, quiet: bool = False, verbose: bool = False, tty: bool = False) -> list[str]:
    """The lines ``check_sites --format FORMAT`` prints after a run."""
    if format == "json":
        return [as_json(report)]
    if format == "nagios":
        return [as_nagios(report)]
    lines = text_lines(report, quiet=quiet, verbose=verbose)
    if tty and lines:
        lines[0] = CLEAR_LINE + lines[0]
    return lines


def as_json(report: RunReport) -> str:
    return json.dumps(report.as_json(), indent=2)


def as_nagios(report: RunReport) -> str:
    total = len(report.results)
    perf = f"passed={report.passed} failed={report.failed} duration={report.duration_ms / 1000:.1f}s"
    if report.failed == 0:
        return f"KONG OK - {report.passed} of {total} checks passed | {perf}"
    failing = ", ".join(label(item) for item in report.results if not item.succeeded)
    return f"KONG CRITICAL - {report.failed} of {total} checks failed: {failing} | {perf}"


def as_junit(report: RunReport) -> bytes:
    """One testsuite per test, one testcase per site."""
    failures = sum(1 for item in report.results if item.status == Status.FAILED)
    root = ET.Element(
        "testsuites",
        name="kong",
        tests=str(len(report.results)),
        failures=str(failures),
        errors=str(report.failed - failures),
        time=f"{report.duration_ms / 1000:.3f}",
    )
    items = sorted(report.results, key=lambda item: item.test)
    for test, group in groupby(items, key=lambda item: item.test):
        cases = list(group)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=test,
            tests=str(len(cases)),
            failures=str(sum(1 for c in cases if c.status == Status.FAILED)),
            errors=str(sum(1 for c in cases if c.status not in (Status.PASSED, Status.FAILED))),
            time=f"{sum(c.duration_ms for c in cases) / 1000:.3f}",
        )
        for case in cases:
            name = f"{case.site}@{case.server}" if case.server else case.site
            element = ET.SubElement(
                suite, "testcase", classname=f"kong.{test}", name=name, time=f"{case.duration_ms / 1000:.3f}"
            )
            if case.status == Status.FAILED:
                ET.SubElement(element, "failure", message=case.reason, type="failed").text = case.reason
            elif case.status != Status.PASSED:
                ET.SubElement(element, "error", message=case.reason, type=case.status).text = case.reason
    xml: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return xml
