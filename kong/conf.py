"""Kong's settings: one defaults dict plus a lazy accessor.

Read settings as ``kong_settings.MAIL_MANAGERS``. Values come from the Django
settings module (``KONG_MAIL_MANAGERS``) when present, otherwise from
``DEFAULTS``. The cache is cleared on ``setting_changed`` so
``override_settings`` works in tests.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    # Mail semantics kept from django-kong.
    "MAIL_MANAGERS": False,
    "MAIL_ADMINS": False,
    "MAIL_ON_RECOVERY": True,
    "MAIL_ON_EVERY_FAILURE": False,
    "MAIL_ON_CONSECUTIVE_FAILURES": 1,
    # Accepted for compatibility; every check starts with a fresh browser.
    "RESET_BROWSER": True,
    "SAFE_MODE": True,
    "WORKERS": 8,
    "CHECK_TIMEOUT": 60,
    "REQUEST_TIMEOUT": 10,
    "VERIFY_TLS": True,
    # Extra seconds the parent waits after a check's timeout before SIGKILL.
    "KILL_GRACE": 5,
    # A worker process is replaced after this many checks (0: never).
    "MAX_CHECKS_PER_WORKER": 500,
    "RESULT_RETENTION_DAYS": 90,
    "WEBHOOKS": [],
    # Deprecated: webhooks are bounded by DELIVERY_TIMEOUT; this still caps
    # each webhook request (the smaller of the two wins).
    "WEBHOOK_TIMEOUT": 5,
    # Seconds per attempt to deliver one alert (an SMTP conversation, a POST).
    "DELIVERY_TIMEOUT": 10,
    # Attempts per delivery (a retryable error is tried again after a short
    # backoff) before it is marked failed.
    "DELIVERY_RETRIES": 3,
    # A run that fails (or recovers) one test on at least this many sites of
    # one type sends each notifier one summary instead of a message per site.
    "ALERT_SUMMARY_THRESHOLD": 5,
    "NOTIFIERS": [
        "kong.notifiers.email.EmailNotifier",
        "kong.notifiers.webhook.WebhookNotifier",
    ],
    "PUBLIC_DASHBOARD": False,
    # Absolute URL prefix for links in mails, e.g. "https://ops.example.com".
    "BASE_URL": "",
    "EMAIL_SUBJECT_PREFIX": "[kong] ",
    # Variables whose names match this pattern are secret (Django's own pattern).
    "SECRET_VARIABLES": "API|TOKEN|KEY|SECRET|PASS|SIGNATURE",
    "TIME_ZONE": None,
    # How long a claimed check stays claimed when its run dies (seconds).
    "CLAIM_LEASE": 300,
    "DASHBOARD_REFRESH": 15,
    # The most decoded bytes a check reads from one response; a larger page
    # ends the check as an error that states the size and the limit.
    "MAX_PAGE_BYTES": 10 * 1024 * 1024,
    # The bytes of address space each worker may map beyond what it inherits
    # from the parent at fork (RLIMIT_AS), so nothing a page does can exhaust
    # the host; 0 or None: no limit.
    "WORKER_MEMORY_LIMIT": 1024 * 1024 * 1024,
    # "pool": `check_sites --due` and kong_scheduler run checks in the local
    # worker pool; "tasks": they claim due checks and enqueue them as Django
    # Tasks (django.tasks, or the django-tasks backport), run by the engine's
    # own workers (django-tasks-db's `manage.py db_worker`).
    "EXECUTOR": "pool",
    # Checks per enqueued task.
    "TASK_BATCH": 20,
    # The task queue of the checks of sites with no location.
    "DEFAULT_QUEUE": "kong",
}


class KongSettings:
    """Attribute access to ``KONG_*`` settings with defaults, typed: each
    name below is what callers get (``manage.py check`` reports a value of
    the wrong type, kong.E001 and friends, before anything reads it)."""

    MAIL_MANAGERS: bool
    MAIL_ADMINS: bool
    MAIL_ON_RECOVERY: bool
    MAIL_ON_EVERY_FAILURE: bool
    MAIL_ON_CONSECUTIVE_FAILURES: int
    RESET_BROWSER: bool
    SAFE_MODE: bool
    WORKERS: int
    CHECK_TIMEOUT: float
    REQUEST_TIMEOUT: float
    VERIFY_TLS: bool
    KILL_GRACE: float
    MAX_CHECKS_PER_WORKER: int
    RESULT_RETENTION_DAYS: int | None
    WEBHOOKS: list[str]
    WEBHOOK_TIMEOUT: float
    DELIVERY_TIMEOUT: float
    DELIVERY_RETRIES: int
    ALERT_SUMMARY_THRESHOLD: int
    NOTIFIERS: list[str]
    PUBLIC_DASHBOARD: bool
    BASE_URL: str
    EMAIL_SUBJECT_PREFIX: str
    SECRET_VARIABLES: str
    TIME_ZONE: str | None
    CLAIM_LEASE: float
    DASHBOARD_REFRESH: int
    MAX_PAGE_BYTES: int
    WORKER_MEMORY_LIMIT: int | None
    EXECUTOR: str
    TASK_BATCH: int
    DEFAULT_QUEUE: str

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"unknown Kong setting: KONG_{name}")
        return _read(name)


@cache
def _read(name: str) -> Any:
    return getattr(settings, f"KONG_{name}", DEFAULTS[name])


@receiver(setting_changed)
def _clear_cache(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("KONG_") or setting == "TIME_ZONE":
        _read.cache_clear()


kong_settings = KongSettings()
