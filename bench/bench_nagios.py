"""P1: one host near its limit. A whole ``check_sites --workers 64`` process
against monitoring-plugins' ``check_http`` run 64 at a time, as Nagios runs
plugins, on the same page of a server that adds 200 ms to every request.

Side by side in the same run, interleaved, best of ``--rounds`` each:

- Kong: ``python -m django check_sites --workers 64`` as a real subprocess
  on a SQLite file in WAL mode (IMMEDIATE transactions, as the README asks),
  everything included: interpreter and Django start-up, system checks,
  syncing and selecting the checks, rendering and validating, forking the
  pool, running, recording every result, the report;
- ``check_http -H 127.0.0.1 -p PORT -u / -s "Latest News"``, 64 at a time
  (a pool of 64 threads, each starting the plugin and waiting for it);
- the latency limit: 64 workers / 0.2 s = 320 checks/s.

Goals: on 2,000 checks Kong >= 0.9x check_http and >= 0.8x the latency
limit; on 400 checks >= 0.6x check_http. ``check_http`` comes from Debian's
``monitoring-plugins-basic``, installed here when missing (as root, with
apt-get); when it cannot be, its rows say so and are marked unmet.

    python bench/bench_nagios.py [--checks 2000 400] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import REPO, LatencyServer, Row, build_fleet, emit, manage_env, profile_process, setup_django

CHECK_HTTP = Path("/usr/lib/nagios/plugins/check_http")
# The larger run (2,000 checks) against check_http, and the smaller (400).
VS_CHECK_HTTP_GOAL = (0.9, 0.6)
VS_LIMIT_GOAL = 0.8


def ensure_check_http() -> str:
    """'' when check_http is there (installing it if need be), else why not."""
    if CHECK_HTTP.exists():
        return ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "check_http is missing and cannot be installed here (needs root and apt-get)"
    print("installing monitoring-plugins-basic for check_http ...", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "monitoring-plugins-basic"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
            return f"could not install monitoring-plugins-basic ({' '.join(command)}: {last[0]})"
    return "" if CHECK_HTTP.exists() else "monitoring-plugins-basic installed no check_http"


def check_http(port: int, count: int, concurrency: int) -> float:
    """Seconds for ``count`` check_http runs, ``concurrency`` at a time; all must pass."""
    command = [str(CHECK_HTTP), "-H", "127.0.0.1", "-p", str(port), "-u", "/", "-s", "Latest News"]

    def one(_: int) -> int:
        return subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False).returncode

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as threads:
        codes = list(threads.map(one, range(count)))
    seconds = time.perf_counter() - started
    assert codes.count(0) == count, f"check_http failed {count - codes.count(0)} times"
    return seconds


def kong_command(workers: int) -> list[str]:
    return [sys.executable, "-m", "django", "check_sites", "--workers", str(workers), "--settings=bench.settings"]


def kong_process(workdir: Path, workers: int, count: int) -> float:
    """Seconds for a whole ``check_sites`` process; every check must pass."""
    started = time.perf_counter()
    done = subprocess.run(
        kong_command(workers), cwd=REPO, env=manage_env(workdir), capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    summary = done.stdout.strip().splitlines()[-1:] or [done.stderr.strip()[-300:]]
    assert done.returncode == 0, summary[0]
    assert re.match(rf"{count} checks: {count} passed", summary[0]), summary[0]
    return seconds


def live_sites(count: int) -> None:
    """Make the first ``count`` sites of the fleet live and the rest not, so a
    plain ``check_sites`` (no selectors) runs exactly ``count`` checks."""
    from kong.models import Site

    ordered = list(Site.objects.order_by("slug").values_list("pk", flat=True))
    Site.objects.filter(pk__in=ordered[:count]).update(is_live=True)
    Site.objects.filter(pk__in=ordered[count:]).update(is_live=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checks", type=int, nargs="+", default=[2000, 400])
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many runs each")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    missing = ensure_check_http()
    if missing:
        print(f"note: {missing}; the check_http ratios are skipped", file=sys.stderr)
    limit = options.workers / options.latency

    rows = []
    with tempfile.TemporaryDirectory() as tmp, LatencyServer(options.latency) as server:
        workdir = Path(tmp)
        setup_django(workdir)
        build_fleet(server.url, max(options.checks))
        port = int(server.url.rstrip("/").rsplit(":", 1)[1])
        for count in options.checks:
            live_sites(count)
            kong, nagios = [], []
            for _ in range(options.rounds):  # interleaved, so load from elsewhere hits both alike
                kong.append(kong_process(workdir, options.workers, count))
                if not missing:
                    nagios.append(check_http(port, count, options.workers))
            rate = count / min(kong)
            nagios_rate = count / min(nagios) if nagios else 0.0
            vs_nagios = rate / nagios_rate if nagios_rate else 0.0
            goal = VS_CHECK_HTTP_GOAL[0] if count == max(options.checks) else VS_CHECK_HTTP_GOAL[1]
            met = not missing and vs_nagios >= goal
            goals = f">= {goal}x check_http"
            measured = f"{vs_nagios:.2f}x check_http" if nagios else "no check_http"
            if count == max(options.checks):
                met = met and rate / limit >= VS_LIMIT_GOAL
                goals += f", >= {VS_LIMIT_GOAL}x limit"
                measured += f", {rate / limit:.2f}x limit"
            versus = f"check_http x{options.workers} {nagios_rate:.0f} checks/s" if nagios else missing
            row = Row(
                id="P1" if count == max(options.checks) else "P1b",
                name=f"check_sites process, {count:,} checks, {options.latency * 1000:.0f} ms, {options.workers} workers",
                measured=measured,
                goal=goals,
                met=met,
                notes=(
                    f"Kong {rate:.0f} checks/s ({min(kong):.2f} s) vs {versus}; latency limit "
                    f"{limit:.0f} checks/s ({rate / limit:.2f}x); best of {options.rounds}"
                ),
                extra={"rate": rate, "check_http_rate": nagios_rate, "limit": limit, "seconds": kong},
            )
            if not met:
                row.profile = profile_process(kong_command(options.workers), manage_env(workdir))
            rows.append(row)
    emit(rows, options.json, "Kong benchmark P1: a check_sites process against check_http x64")


if __name__ == "__main__":
    main()
