"""Django settings for the scale-out benchmark: PostgreSQL (the database
``.ci/services`` starts) with django-tasks-db as the Tasks backend.

``KONG_BENCH_PGDATABASE`` names the database; ``KONG_WORKERS`` and
``KONG_TASK_BATCH`` come from the environment so each ``db_worker`` process
of a run gets the pool size being measured.
"""

from __future__ import annotations

import os

import django

SECRET_KEY = "kong-bench-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "kong", "django_tasks_db"]
if django.VERSION < (6, 0):
    INSTALLED_APPS.append("django_tasks")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("KONG_BENCH_PGDATABASE", "kong_bench_tasks"),
        "USER": os.environ.get("PGUSER", "kong"),
        "PASSWORD": os.environ.get("PGPASSWORD", "kong"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
    }
}
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default", "kong"]}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
KONG_WORKERS = int(os.environ.get("KONG_WORKERS", "64"))
KONG_TASK_BATCH = int(os.environ.get("KONG_TASK_BATCH", "20"))
