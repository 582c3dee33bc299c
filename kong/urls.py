"""Kong's URLs (namespace ``kong``)."""

from __future__ import annotations

from django.urls import path

from kong import views

app_name = "kong"

urlpatterns = [
    path("", views.index, name="index"),
    path("dashboard/", views.dashboard_view, name="dashboard"),
    path("failed/", views.failed, name="failed"),
    path("site/<slug:site_slug>/", views.site_detail, name="site_detail"),
    path("site/<slug:site_slug>/<slug:test_slug>/", views.testresult_for_site, name="testresult_for_site"),
    path("site/<slug:site_slug>/<slug:test_slug>/run/", views.run_test_on_site, name="run_test_on_site"),
    path("run/<str:ticket>/", views.run_pending, name="run_pending"),
    path("result/<int:pk>/", views.result_detail, name="result_detail"),
    path("test/<slug:test_slug>/", views.test_detail, name="test_detail"),
    path("metrics", views.metrics, name="metrics"),
    path("api/status.json", views.api_status, name="api_status"),
]
