from __future__ import annotations

from django.apps import AppConfig


class KongConfig(AppConfig):
    name = "kong"
    verbose_name = "Kong"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from kong import system_checks  # noqa: F401  (registers the checks)
