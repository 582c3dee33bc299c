"""Benchmark the dashboard on a large SQLite fleet (not a test; never gates CI).

    python bench/bench_dashboard.py [--sites 100] [--tests 20] [--results 1000000]

Builds a fleet of sites x tests in a temporary SQLite file, fills TestResult
with ``--results`` rows, then renders the index and the history pages
through Django's test client. It prints, side by side in one run:

- the index's p50/p95 render time and SQL query count with 10% of the
  history, with all of it, and with the fleet doubled (ratios, not limits);
- the history pages' times and query counts;
- SQLite's EXPLAIN QUERY PLAN for every query the history pages make, and
  whether any of them scans the TestResult table.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import django
from django.conf import settings
from django.urls import include, path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

urlpatterns: list[object] = []  # filled in once Django is set up


def configure(database: Path) -> None:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="kong-bench",
        ALLOWED_HOSTS=["*"],
        USE_TZ=True,
        TIME_ZONE="UTC",
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django.contrib.staticfiles",
            "kong",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(database)}},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        STATIC_URL="/static/",
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    )
    django.setup()
    urlpatterns.append(path("kong/", include("kong.urls")))


# -- building the fleet ----------------------------------------------------------


def build_inventory(sites: int, tests: int, prefix: str = "") -> None:
    """``sites`` sites over 4 types and 5 servers; every test applies to every type."""
    from kong import services
    from kong.models import Server, Site, Test, Type

    kinds = [Type.objects.get_or_create(slug=f"type-{n}", defaults={"name": f"Type {n}"})[0] for n in range(4)]
    servers = [
        Server.objects.get_or_create(slug=f"web{n}", defaults={"name": f"web{n}", "hostname": f"web{n}"})[0]
        for n in range(5)
    ]
    made = Site.objects.bulk_create(
        Site(slug=f"{prefix}site-{n:04d}", name=f"{prefix}Site {n:04d}", servername=f"site{n}.example.com",
             type=kinds[n % len(kinds)])
        for n in range(sites)
    )  # fmt: skip
    Site.servers.through.objects.bulk_create(
        Site.servers.through(site_id=site.pk, server_id=servers[index % len(servers)].pk)
        for index, site in enumerate(made)
    )
    if not Test.objects.exists():
        for n in range(tests):
            test = Test.objects.create(slug=f"test-{n:02d}", name=f"Test {n:02d}", body="go {{ site.url }}\ncode 200")
            test.types.set(kinds)
    services.sync_checks()


def fill_results(database: Path, count: int, *, seed: int = 1) -> None:
    """``count`` results spread evenly over the checks, one every 10 minutes
    per check going back in time, about 5% failed; then point each Check at
    its newest result."""
    from django.db import connection

    connection.close()
    db = sqlite3.connect(database)
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA journal_mode = MEMORY")
    pairs = db.execute("SELECT test_id, site_id FROM kong_check ORDER BY id").fetchall()
    already = db.execute("SELECT COUNT(*) FROM kong_testresult").fetchone()[0]
    per_pair = max(1, count // len(pairs))
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(tzinfo=None)
    start_step = already // len(pairs)
    sql = (
        "INSERT INTO kong_testresult (test_id, site_id, server_id, run_date, duration, succeeded, status,"
        " reason, content, script, failed_line) VALUES (?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    for step in range(start_step, start_step + per_pair):
        when = (now - timedelta(minutes=10 * step, seconds=rng.random())).isoformat(" ")
        rows = []
        for test_id, site_id in pairs:
            failed = rng.random() < 0.05
            rows.append((
                test_id, site_id, when, 80 + rng.random() * 400, not failed, "failed" if failed else "passed",
                "no match to 'Latest News' at line 2" if failed else "",
                ">> 1: go http://site.example.com\n==> at http://site.example.com\n>> 2: code 200\n",
                "go http://site.example.com\ncode 200", 2 if failed else None,
            ))  # fmt: skip
        db.executemany(sql, rows)
    db.execute(
        """UPDATE kong_check SET
            last_result_id = (SELECT r.id FROM kong_testresult r WHERE r.site_id = kong_check.site_id
                              AND r.test_id = kong_check.test_id ORDER BY r.run_date DESC LIMIT 1)"""
    )
    db.execute(
        """UPDATE kong_check SET
            status = (SELECT r.status FROM kong_testresult r WHERE r.id = kong_check.last_result_id),
            last_run_at = (SELECT r.run_date FROM kong_testresult r WHERE r.id = kong_check.last_result_id),
            status_since = (SELECT r.run_date FROM kong_testresult r WHERE r.id = kong_check.last_result_id),
            consecutive_failures = (SELECT NOT r.succeeded FROM kong_testresult r
                                    WHERE r.id = kong_check.last_result_id)
           WHERE last_result_id IS NOT NULL"""
    )
    db.commit()
    db.execute("ANALYZE")
    db.close()


# -- measuring -------------------------------------------------------------------


def measure(client: object, url: str, repeat: int) -> tuple[float, float, int, float]:
    """p50 and p95 wall-clock milliseconds over ``repeat`` renders, the query
    count, and the p50 of this process's CPU milliseconds (which other busy
    processes on the machine disturb less than the wall clock)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)  # type: ignore[attr-defined]  # warm the template cache
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)  # type: ignore[attr-defined]
    assert response.status_code == 200, (url, response.status_code)
    count = len(queries)  # read now: the next request clears the log
    times, cpu = [], []
    for _ in range(repeat):
        started, used = time.perf_counter(), time.process_time()
        client.get(url)  # type: ignore[attr-defined]
        times.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - used) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))], count, statistics.median(cpu)


def explain(client: object, urls: list[str]) -> list[tuple[str, str, str]]:
    """(url, sql, plan) for each query the pages make that reads kong_testresult."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    plans = []
    seen = set()
    for url in urls:
        with CaptureQueriesContext(connection) as queries:
            client.get(url)  # type: ignore[attr-defined]
        for query in list(queries.captured_queries):
            sql = query["sql"]
            if "kong_testresult" not in sql or not sql.lstrip().upper().startswith("SELECT"):
                continue
            with connection.cursor() as cursor:
                cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
                plan = "; ".join(row[-1] for row in cursor.fetchall())
            if (url, plan) not in seen:  # site_detail makes one such query per test
                seen.add((url, plan))
                plans.append((url, sql, plan))
    return plans


def access(plan: str) -> str:
    """How SQLite reads kong_testresult: "seek" (SEARCH through an index),
    "index walk" (SCAN of a whole index) or "TABLE SCAN"."""
    steps = [step.strip() for step in plan.split(";") if "kong_testresult" in step]
    if any(step.startswith("SCAN") and "INDEX" not in step for step in steps):
        return "TABLE SCAN"
    if any(step.startswith("SCAN") for step in steps):
        return "index walk"
    return "seek"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--tests", type=int, default=20)
    parser.add_argument("--results", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30, help="renders per measurement")
    options = parser.parse_args()

    workdir = tempfile.TemporaryDirectory(prefix="kong-bench-")
    database = Path(workdir.name) / "bench.sqlite3"
    configure(database)
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client
    from django.urls import reverse

    from kong.models import Check, TestResult

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    build_inventory(options.sites, options.tests)
    pairs = Check.objects.count()
    client = Client()
    client.force_login(User.objects.create_user("bench"))
    index = reverse("kong:index")
    rows = []

    fill_results(database, options.results // 10)
    rows.append((f"{pairs} checks, {TestResult.objects.count():,} results", *measure(client, index, options.repeat)))
    fill_results(database, options.results - options.results // 10)
    total = TestResult.objects.count()
    print(f"built {pairs} checks and {total:,} results in {time.perf_counter() - started:.0f} s\n")
    rows.append((f"{pairs} checks, {total:,} results", *measure(client, index, options.repeat)))
    full = rows[-1]

    check = Check.objects.select_related("site", "test").filter(status="failed").first() or Check.objects.first()
    assert check is not None
    assert check.last_result_id is not None
    history = reverse("kong:testresult_for_site", args=[check.site.slug, check.test.slug])
    pages = {
        "history (testresult_for_site)": history,
        "history, page 20": f"{history}?page=20&range=30d",
        "result_detail": reverse("kong:result_detail", args=[check.last_result_id]),
        "site_detail": reverse("kong:site_detail", args=[check.site.slug]),
        "test_detail": reverse("kong:test_detail", args=[check.test.slug]),
        "failed": reverse("kong:failed"),
        "failed, page 50": reverse("kong:failed") + "?page=50",
        "dashboard (wallboard)": reverse("kong:dashboard"),
        "metrics": reverse("kong:metrics"),
    }
    page_rows = [(name, *measure(client, url, max(5, options.repeat // 3))) for name, url in pages.items()]
    plans = explain(client, [url for name, url in pages.items() if "dashboard" not in name and name != "metrics"])

    build_inventory(options.sites, 0, prefix="more-")  # the fleet doubled; its new checks have no history
    doubled = Check.objects.count()
    fill_results(database, doubled * 10)  # ...then ten runs for every check, old and new
    rows.append((f"{doubled} checks, {TestResult.objects.count():,} results", *measure(client, index, options.repeat)))

    print("index (the fleet matrix)")
    print(f"  {'data':<40} {'p50 ms':>8} {'p95 ms':>8} {'cpu p50':>8} {'queries':>8} {'p50 ratio':>10}")
    for label, p50, p95, count, cpu in rows:
        print(f"  {label:<40} {p50:>8.1f} {p95:>8.1f} {cpu:>8.1f} {count:>8} {p50 / rows[0][1]:>9.2f}x")
    print(f"\nindex at {full[0]}: p50 {full[1]:.1f} ms ({full[4]:.1f} ms of CPU), {full[3]} queries "
          f"(bar: p50 <= 50 ms, <= 10 queries: {'met' if full[1] <= 50 and full[3] <= 10 else 'NOT MET'})")
    print(f"load average while measuring: {' '.join(f'{n:.2f}' for n in os.getloadavg())}")  # fmt: skip
    print(f"query count with 10x the history and with the fleet doubled: "
          f"{'constant' if len({row[3] for row in rows}) == 1 else 'GROWS'} ({[row[3] for row in rows]})")  # fmt: skip

    print("\nother pages at full history")
    print(f"  {'page':<32} {'p50 ms':>8} {'p95 ms':>8} {'cpu p50':>8} {'queries':>8}")
    for name, p50, p95, count, cpu in page_rows:
        print(f"  {name:<32} {p50:>8.1f} {p95:>8.1f} {cpu:>8.1f} {count:>8}")

    print("\nEXPLAIN QUERY PLAN for every history query that reads kong_testresult")
    kinds = [access(plan) for _, _, plan in plans]
    for (url, sql, plan), kind in zip(plans, kinds, strict=True):
        print(f"  [{kind}] {url}\n      {sql[:150]}{'...' if len(sql) > 150 else ''}\n      -> {plan}")
    print(f"\n{len(plans)} history queries: {kinds.count('seek')} seek through an index, "
          f"{kinds.count('index walk')} walk a whole index, {kinds.count('TABLE SCAN')} scan the table")  # fmt: skip
    workdir.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
