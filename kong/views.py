"""Kong's dashboard views (placeholders until the dashboard lands)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse


def _placeholder(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return HttpResponse("Kong dashboard: coming soon.", content_type="text/plain")


index = dashboard = failed = site_detail = testresult_for_site = _placeholder
run_test_on_site = result_detail = test_detail = metrics = api_status = _placeholder
