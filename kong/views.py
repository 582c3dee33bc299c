"""Kong's pages. Each view reads through ``kong.dashboard`` and renders.

Every page needs a logged-in user unless ``KONG_PUBLIC_DASHBOARD`` is True;
running a check always needs login and the ``kong.run_check`` permission.
Templates are looked up specific-then-default (``kong/site_detail_<slug>.html``
before ``kong/site_detail.html``), so a host project can override one page,
or one site's page, by dropping in one template.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_GET, require_POST

from kong import dashboard, run_now
from kong.conf import kong_settings
from kong.engine.scripts import numbered
from kong.masking import mask
from kong.models import RUN_PERMISSION, VIEW_PERMISSION, Site, Test, TestResult

HISTORY_PAGE_SIZE = 15
FAILED_PAGE_SIZE = 25
# How often a run-now's pending page reloads itself (seconds).
PENDING_POLL_SECONDS = 1

View = Callable[..., HttpResponse]

# Kong's pages use no inline script or style, so the browser may refuse
# everything else: content from a checked site (a log, a page snippet) that
# slipped past escaping still could not run.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
NEEDS_VIEW_PERMISSION = f"You need the {VIEW_PERMISSION} permission to see Kong's pages."


def can_view(request: HttpRequest) -> bool:
    """``KONG_PUBLIC_DASHBOARD``, or a user with ``kong.view_testresult``
    (superusers have every permission)."""
    return kong_settings.PUBLIC_DASHBOARD or request.user.has_perm(VIEW_PERMISSION)


def secured(response: HttpResponse) -> HttpResponse:
    response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.setdefault("X-Content-Type-Options", "nosniff")
    return response


def kong_page(view: View) -> View:
    """A GET page: login and ``kong.view_testresult`` unless ``KONG_PUBLIC_DASHBOARD``;
    a logged-in user without the permission gets 403, never a page."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not can_view(request):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            return secured(HttpResponseForbidden(NEEDS_VIEW_PERMISSION, content_type="text/plain"))
        return secured(view(request, *args, **kwargs))

    return require_GET(wrapper)


def kong_feed(view: View) -> View:
    """A machine-readable feed: the same rule, but 403 instead of a login page."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not can_view(request):
            message = f"Log in with the {VIEW_PERMISSION} permission, or set KONG_PUBLIC_DASHBOARD = True."
            return secured(HttpResponseForbidden(message, content_type="text/plain"))
        return secured(view(request, *args, **kwargs))

    return require_GET(wrapper)


def templates(page: str, *specific: str) -> list[str]:
    """``kong/<page>_<specific>.html`` for each specific key, then ``kong/<page>.html``."""
    return [f"kong/{page}_{key}.html" for key in specific if key] + [f"kong/{page}.html"]


def render(request: HttpRequest, names: list[str], context: dict[str, Any]) -> TemplateResponse:
    """A ``TemplateResponse``, so host projects and tests can read ``context_data``."""
    return TemplateResponse(request, names, context)


def render_live(request: HttpRequest, page: str, context: dict[str, Any]) -> TemplateResponse:
    """The whole page, or with ``?partial=1`` only its live fragment (for in-place refresh)."""
    context["refresh"] = kong_settings.DASHBOARD_REFRESH
    if request.GET.get("partial"):
        response = render(request, templates(f"{page}_live"), {**context, "partial": True})
        response["X-Kong-Partial"] = "1"
        response["Cache-Control"] = "no-store"
        return response
    return render(request, templates(page), context)


@kong_page
def index(request: HttpRequest) -> HttpResponse:
    """The live fleet matrix: sites by tests, filterable, failing first."""
    fleet = dashboard.load_fleet()
    filters = dashboard.Filters.from_query(request.GET)
    context = {"matrix": dashboard.build_matrix(fleet, filters), "filters": filters}
    return render_live(request, "index", context)


@kong_page
def dashboard_view(request: HttpRequest) -> HttpResponse:
    """The wallboard: one big light per site."""
    lights = dashboard.lights(dashboard.load_fleet())
    failing = sum(1 for light in lights if light.failing)
    return render_live(request, "dashboard", {"lights": lights, "failing": failing})


@kong_page
def failed(request: HttpRequest) -> HttpResponse:
    """Recent failures, newest first (index kong_result_failed)."""
    page = Paginator(dashboard.recent_failures(), FAILED_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, templates("failed"), {"page": page})


@kong_page
def site_detail(request: HttpRequest, site_slug: str) -> HttpResponse:
    """Every test on one site with its latest result and a sparkline."""
    site = get_object_or_404(Site.objects.select_related("type"), slug=site_slug)
    context = {
        "site": site,
        "rows": dashboard.site_checks(site),
        "servers": list(site.servers.all()),
        "can_run": request.user.has_perm(RUN_PERMISSION),
    }
    return render(request, templates("site_detail", site.slug), context)


@kong_page
def testresult_for_site(request: HttpRequest, site_slug: str, test_slug: str) -> HttpResponse:
    """One test's history on one site: 15 per page, a duration chart, pass rate
    and p50/p95 of the raw results in range, and a daily chart from rollups.

    ``?days=365`` is short for ``?range=365d``.
    """
    site = get_object_or_404(Site, slug=site_slug)
    test = get_object_or_404(Test, slug=test_slug)
    days = request.GET.get("days", "")
    name = request.GET.get("range") or (f"{days}d" if days else "")
    range_name, since = dashboard.range_start(name, ranges=dashboard.HISTORY_RANGES)
    location = request.GET.get("location", "")
    results = dashboard.history(site, test, since, location)
    points = dashboard.points(results)
    daily = dashboard.daily(site, test, dashboard.HISTORY_RANGES[range_name])
    context = {
        "site": site,
        "test": test,
        "checks": dashboard.pair_checks(site, test),
        "location": location,
        "page": Paginator(results, HISTORY_PAGE_SIZE).get_page(request.GET.get("page")),
        "points": points,
        "stats": dashboard.stats(points),
        "daily": daily,
        "beyond_raw": daily.raw_since is not None and since < daily.raw_since,
        "range": range_name,
        "ranges": list(dashboard.HISTORY_RANGES),
        "chart_limit": dashboard.CHART_LIMIT,
        "can_run": request.user.has_perm(RUN_PERMISSION),
    }
    return render(request, templates("testresult_for_site", f"{site.slug}_{test.slug}"), context)


@kong_page
def result_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One result: the script with line numbers and the failing line, the log, the reason."""
    result = get_object_or_404(TestResult.objects.select_related("test", "site", "server"), pk=pk)
    secrets = result.site.secret_values()
    previous, following = dashboard.neighbours(result)
    context = {
        "result": result,
        "lines": numbered(mask(result.script, secrets)),
        "log": mask(result.content, secrets),
        "reason": mask(result.reason, secrets),
        "previous": previous,
        "next": following,
        "can_run": request.user.has_perm(RUN_PERMISSION),
    }
    return render(request, templates("result_detail", result.test.slug), context)


@kong_page
def test_detail(request: HttpRequest, test_slug: str) -> HttpResponse:
    """One test across all its sites, with a chart comparing their durations."""
    test = get_object_or_404(Test, slug=test_slug)
    range_name, since = dashboard.range_start(request.GET.get("range", ""))
    checks = dashboard.test_checks(test)
    context = {
        "test": test,
        "checks": checks,
        "series": dashboard.named_series_for_test(test, since, checks),
        "range": range_name,
        "ranges": list(dashboard.RANGES),
    }
    return render(request, templates("test_detail", test.slug), context)


@require_POST
@csrf_protect
def run_test_on_site(request: HttpRequest, site_slug: str, test_slug: str) -> HttpResponse:
    """Start one test on one site now, in a process of its own (``kong.run_now``),
    and answer at once with a page that follows the run."""
    history = reverse("kong:testresult_for_site", args=[site_slug, test_slug])
    if not request.user.is_authenticated:
        return redirect_to_login(history)
    if not request.user.has_perm(RUN_PERMISSION):
        return HttpResponseForbidden("You need the kong.run_check permission.", content_type="text/plain")
    site = get_object_or_404(Site, slug=site_slug)
    test = get_object_or_404(Test, slug=test_slug)
    if not run_now.allowed(request.user.pk):
        message = f"Too many runs: at most {run_now.RATE_LIMIT} every {run_now.RATE_WINDOW} s. Try again shortly."
        return secured(HttpResponse(message, status=429, content_type="text/plain"))
    try:
        check_ids = run_now.checks_for(site, test, request.POST.get("server", ""))
    except run_now.NothingToRun:
        raise Http404("This test does not apply to this site.") from None
    label = f"{test.name} on {site.name}"
    try:
        run = run_now.start(check_ids)
    except run_now.RunNowError as error:
        messages.error(request, f"Could not start {label}: {error}", fail_silently=True)
        return redirect(history)
    if not run.in_flight:
        messages.info(request, f"Started {label}.", fail_silently=True)
    elif not run.started:
        messages.info(request, f"{label} is already running; this page follows that run.", fail_silently=True)
    else:
        text = f"Started {label}; {len(run.in_flight)} of its {len(check_ids)} checks were already running."
        messages.info(request, text, fail_silently=True)
    return redirect("kong:run_pending", run.ticket)


@kong_page
def run_pending(request: HttpRequest, ticket: str) -> HttpResponse:
    """A run-now in flight. The page reloads itself every second while the
    run lasts, then redirects to the result (to the history when the test
    runs through several servers). A run that ended without recording a
    result is said so, plainly."""
    try:
        entries = run_now.read_ticket(ticket)
    except run_now.BadTicket:
        raise Http404("No such run.") from None
    rows = run_now.progress(entries)
    finished = [(row.check, row.result) for row in rows if row.result is not None]
    if rows and len(finished) == len(rows):
        for check, result in finished:
            via = f" via {check.server.name}" if check.server else ""
            label = f"{check.test.name} on {check.site.name}{via}"
            level = messages.SUCCESS if result.succeeded else messages.ERROR
            messages.add_message(request, level, f"Ran {label}: {result.status}.", fail_silently=True)
        if len(finished) == 1:
            return redirect("kong:result_detail", finished[0][1].pk)
        return redirect("kong:testresult_for_site", finished[0][0].site.slug, finished[0][0].test.slug)
    first = rows[0].check if rows else None
    context = {
        "rows": rows,
        "site": first.site if first else None,
        "test": first.test if first else None,
        "running": any(row.running for row in rows),
        "lost": any(row.lost for row in rows),
        "poll_seconds": PENDING_POLL_SECONDS,
        "lease_seconds": round(kong_settings.CLAIM_LEASE),
        "can_run": request.user.has_perm(RUN_PERMISSION),
    }
    response = render(request, templates("run_pending", first.test.slug if first else ""), context)
    response["Cache-Control"] = "no-store"
    return response


@kong_feed
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format: one set of gauges per check, plus totals."""
    text = dashboard.prometheus(dashboard.load_fleet().filtered(dashboard.Filters.from_query(request.GET)))
    return HttpResponse(text, content_type="text/plain; version=0.0.4; charset=utf-8")


@kong_feed
def api_status(request: HttpRequest) -> HttpResponse:
    """JSON: counts by status and every check's state."""
    fleet = dashboard.load_fleet().filtered(dashboard.Filters.from_query(request.GET))
    data = dashboard.status_json(fleet, dashboard.runner_staleness())
    return HttpResponse(json.dumps(data, indent=1), content_type="application/json")

