"""The admin at /admin/, Kong's dashboard at /."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "Kong demo"
admin.site.site_title = "Kong demo"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("kong.urls")),
]
