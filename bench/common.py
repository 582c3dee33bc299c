"""Shared pieces of Kong's benchmarks (not tests; they never gate CI).

- ``setup_django(workdir)``: Django on a fresh SQLite file in WAL mode
  (``synchronous=NORMAL``, the usual production setting for SQLite);
- ``LatencyServer``: a threaded HTTP server on 127.0.0.1 in its own process,
  adding a fixed delay to every request, so its CPU never competes with the
  process being measured for the GIL;
- ``build_fleet``: N sites of one type and one test that applies to them;
- ``Row``: one line of the ``run_all`` table, printed as JSON by each
  benchmark with ``--json``.
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SCRIPT = 'go {{ site.url }}\ncode 200\nfind "Latest News"'


@dataclass
class Row:
    """One benchmark line: what was measured, the goal, and whether it was met."""

    id: str
    name: str
    measured: str
    goal: str
    met: bool | None  # None: informative, no goal
    notes: str = ""
    profile: str = ""  # shown under the table when the goal is missed
    extra: dict[str, Any] = field(default_factory=dict)


def emit(rows: list[Row], as_json: bool, title: str) -> None:
    """Print ``rows`` as JSON (for run_all) or as a small table."""
    if as_json:
        print(json.dumps([asdict(row) for row in rows]))
        return
    print(title)
    print(f"(machine: {os.cpu_count()} cores, Python {sys.version.split()[0]})")
    for row in rows:
        verdict = {True: "met", False: "NOT MET", None: "-"}[row.met]
        print(f"  {row.id:<4} {row.name:<46} {row.measured:<24} goal {row.goal:<16} {verdict}")
        if row.notes:
            print(f"       {row.notes}")
    for row in rows:
        if row.profile:
            print(f"\nprofile for {row.id} {row.name}:\n{row.profile}")


# -- Django --------------------------------------------------------------------------


def setup_django(workdir: Path, **extra_settings: Any) -> None:
    """Configure Django for a benchmark on ``workdir``/bench.sqlite3 and migrate."""
    os.environ["KONG_BENCH_DB"] = str(workdir / "bench.sqlite3")
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    import django
    from django.conf import settings

    django.setup()
    for name, value in extra_settings.items():
        setattr(settings, name, value)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def manage_env(workdir: Path) -> dict[str, str]:
    """Environment for ``python -m django ... --settings=bench.settings`` on the same database."""
    return {
        **os.environ,
        "KONG_BENCH_DB": str(workdir / "bench.sqlite3"),
        "PYTHONPATH": str(REPO),
        "PYTHONWARNINGS": "ignore",
    }


def build_fleet(url: str, sites: int, *, tests: int = 1, prefix: str = "site") -> None:
    """``sites`` live sites at ``url`` of a new type ``prefix``, and ``tests`` tests on that type."""
    from kong import services
    from kong.models import Site, Test, Type

    kind, _ = Type.objects.get_or_create(slug=prefix, defaults={"name": prefix.title()})
    Site.objects.bulk_create(
        [Site(slug=f"{prefix}-{n:05d}", name=f"Site {n:05d}", servername=url, type=kind) for n in range(sites)],
        batch_size=500,
    )
    for number in range(tests):
        test = Test.objects.create(slug=f"{prefix}-front-page-{number}", name=f"Front page {number}", body=SCRIPT)
        test.types.set([kind])
    services.sync_checks()


def clear_results() -> None:
    from kong.models import Check, TestResult

    Check.objects.update(last_result=None, next_due_at=None, claimed_until=None, claim_token="")
    TestResult.objects.all().delete()


# -- the HTTP server -----------------------------------------------------------------


class LatencyServer:
    """``python bench/server.py`` in a child process; ``url`` once started."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> LatencyServer:
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "bench" / "server.py"), "--latency", str(self.latency)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(10)


# -- measuring -----------------------------------------------------------------------


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


# Where a Kong run's time goes, by the functions that do each part.
PARTS = {
    "django.setup": ("django/__init__.py", "setup"),
    "system checks": ("django/core/management/base.py", "check"),
    "sync_checks": ("kong/services/planning.py", "sync_checks"),
    "build_job (render + validate)": ("kong/services/jobs.py", "build_job"),
    "record_many (DB write: results + check state)": ("kong/services/recording.py", "record_many"),
    "runner.execute (twill, inline runs)": ("kong/engine/runner.py", "execute"),
    "forking workers": ("kong/engine/pool.py", "_spawn"),
    "stopping workers": ("kong/engine/pool.py", "close"),
    "idle, waiting for workers": ("~", "<method 'poll' of 'select.poll' objects>"),
}


def breakdown(stats: pstats.Stats) -> str:
    """One line: the share of the profiled time each part of a run took."""
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    total = max((entry[3] for entry in table.values()), default=0.0) or 1.0
    shares = []
    for label, (filename, function) in PARTS.items():
        spent = sum(
            entry[3]
            for (file, _, name), entry in table.items()
            if file.endswith(filename) and name == function
        )
        if spent:
            shares.append(f"{label} {spent / total:.0%}")
    return "  share of the run: " + "; ".join(shares)


@contextmanager
def profiled(into: list[str], *, limit: int = 18) -> Iterator[None]:
    """Profile the block; append a breakdown by part, then the top functions
    by cumulative and own time, to ``into``."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        into.extend(_report(pstats.Stats(profiler), limit))


def profile_if_missed(row: Row, run: Callable[[], Any]) -> None:
    """When ``row``'s goal is missed, profile one more ``run()`` into ``row.profile``."""
    if row.met:
        return
    profile: list[str] = []
    with profiled(profile):
        run()
    row.profile = "\n".join(profile)


def profile_process(command: list[str], env: dict[str, str], *, limit: int = 18) -> str:
    """Run ``command`` (``python -m ...``) once more under cProfile, in a
    process of its own, and return its breakdown and top functions (the
    process that ran ``command``; not its forked workers)."""
    assert command[1] == "-m", command
    with tempfile.TemporaryDirectory() as workdir:
        output = Path(workdir) / "profile.out"
        subprocess.run(
            [command[0], "-m", "cProfile", "-o", str(output), *command[1:]],
            cwd=REPO, env=env, capture_output=True, check=False,
        )  # fmt: skip
        if not output.exists():
            return "  (the profiled run did not finish)"
        return "\n".join(_report(pstats.Stats(str(output)), limit))


def _report(stats: pstats.Stats, limit: int) -> list[str]:
    lines_out = [breakdown(stats)]
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        stats.stream = out  # type: ignore[attr-defined]
        stats.strip_dirs().sort_stats(order).print_stats(limit)
        lines = [line for line in out.getvalue().splitlines() if line.strip()]
        start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
        lines_out.append(f"  by {order}:\n" + "\n".join(f"    {line}" for line in lines[start:]))
    return lines_out


def memory_kib(pid: int) -> dict[str, int]:
    """Rss, Pss and USS (private clean + dirty) of ``pid`` in KiB, from /proc/PID/smaps_rollup."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as smaps:
        for line in smaps:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                values[key] = int(rest.split()[0])
    values["Uss"] = values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)
    return values


def parse_json_flag() -> bool:
    return "--json" in sys.argv[1:]
