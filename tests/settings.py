"""Settings for Kong's own test suite (tests/ is a small Django app)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "kong-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "kong",
    "tests",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# A real SQLite file, one per test process so concurrent runs (two venvs, two
# engineers) never share it. KONG_SQLITE_PATH lets a subprocess (a real
# `manage.py check_sites`) open the test database file that the run created.
# KONG_TEST_DATABASE=postgres switches to the PostgreSQL server .ci/services starts.
_SQLITE_TEST_FILE = os.environ.get(
    "KONG_SQLITE_PATH", str(Path(tempfile.gettempdir()) / f"kong-test-{os.getpid()}.sqlite3")
)
DATABASES: dict[str, dict[str, object]]
if os.environ.get("KONG_TEST_DATABASE") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("PGDATABASE", "kong"),
            "USER": os.environ.get("PGUSER", "kong"),
            "PASSWORD": os.environ.get("PGPASSWORD", "kong"),
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _SQLITE_TEST_FILE,
            "TEST": {"NAME": _SQLITE_TEST_FILE},
            # What the README asks of every SQLite install: WAL so readers never
            # block writers, and writers that take the lock up front and queue
            # for it, so concurrent runs never fail with "database is locked".
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "/static/"
# Email: the test runner switches to the locmem backend (MAILERS on Django 6.1+).
MANAGERS = [("Ops", "ops@example.com")]
ADMINS = [("Admin", "admin@example.com")]
SERVER_EMAIL = "kong@example.com"
KONG_BASE_URL = "http://kong.example.com"
KONG_WORKERS = 2
LOGIN_URL = "/admin/login/"

# Claims: tests of dead workers shorten the lease so they need not wait 5 minutes.
KONG_CLAIM_LEASE = float(os.environ.get("KONG_TEST_CLAIM_LEASE", 300))

# Scale-out: KONG_TEST_TASKS=db runs Kong's tasks through django-tasks-db
# (db_worker processes on the test database), =rq through django-tasks-rq and
# the redis-server .ci/services starts on 127.0.0.1:KONG_TEST_REDIS_PORT.
# Without it, the framework's default (the Immediate backend) applies.
# Every queue Kong uses is listed, "default" included (the engine validates
# a task's queue against QUEUES).
_TEST_TASK_QUEUES = ["default", "kong", "kong-eu", "kong-us"]
_TASKS_ENGINE = os.environ.get("KONG_TEST_TASKS", "")
if _TASKS_ENGINE:
    import django

    if django.VERSION < (6, 0):
        INSTALLED_APPS.append("django_tasks")
if _TASKS_ENGINE == "db":
    INSTALLED_APPS.append("django_tasks_db")
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": _TEST_TASK_QUEUES}}
elif _TASKS_ENGINE == "rq":
    INSTALLED_APPS += ["django_rq", "django_tasks_rq"]
    _REDIS = f"redis://127.0.0.1:{os.environ.get('KONG_TEST_REDIS_PORT', '6390')}/{os.environ.get('KONG_TEST_REDIS_DB', '0')}"
    TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": _TEST_TASK_QUEUES}}
    RQ_QUEUES = {name: {"URL": _REDIS, "DEFAULT_TIMEOUT": 600} for name in _TEST_TASK_QUEUES}
