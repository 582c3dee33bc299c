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
