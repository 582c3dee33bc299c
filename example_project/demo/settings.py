"""Settings for Kong's demo project. Not for production: the key is public
and DEBUG is on.

Environment overrides, for tests and CI:
- ``KONG_DEMO_DB``: the SQLite file (default ``example_project/demo.sqlite3``);
- ``KONG_DEMO_PORT``: the runserver port that links in mails point to (8000).
"""

from __future__ import annotations

import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent.parent  # example_project/
SECRET_KEY = "kong-demo-not-secret"
DEBUG = True  # runserver serves the admin's static files
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
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
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo.urls"
WSGI_APPLICATION = "demo.wsgi.application"

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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("KONG_DEMO_DB") or str(BASE_DIR / "demo.sqlite3"),
        # check_sites, kong_scheduler, run-now and the admin all write: WAL lets
        # the dashboard read while they do, IMMEDIATE makes writers queue for
        # the lock (up to `timeout` seconds) instead of failing with "database
        # is locked" (kong.W012, kong.W013).
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# `manage.py loaddata demo_fleet` finds fixtures/demo_fleet.json.
FIXTURE_DIRS = [BASE_DIR / "fixtures"]

STATIC_URL = "/static/"
# The dashboard needs a login (KONG_PUBLIC_DASHBOARD is False): use the admin's.
LOGIN_URL = "/admin/login/"

# Alert mails are printed to the terminal instead of being sent. Django 6.1
# configures mail with MAILERS and deprecates EMAIL_BACKEND.
_CONSOLE_MAIL = "django.core.mail.backends.console.EmailBackend"
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": _CONSOLE_MAIL}}
else:
    EMAIL_BACKEND = _CONSOLE_MAIL
SERVER_EMAIL = "kong@example.com"
DEFAULT_FROM_EMAIL = SERVER_EMAIL
MANAGERS = [("Ops team", "ops@example.com")]
ADMINS = [("Admin", "admin@example.com")]

# -- Kong (every KONG_* setting is optional; defaults in kong/conf.py) -------

# Mail MANAGERS when a check fails, and again when it recovers.
KONG_MAIL_MANAGERS = True
# KONG_MAIL_ADMINS = False              # also mail ADMINS
# KONG_MAIL_ON_RECOVERY = True          # mail when a failing check passes again
# KONG_MAIL_ON_EVERY_FAILURE = False    # mail on every failing run, not only the first
# KONG_MAIL_ON_CONSECUTIVE_FAILURES = 1 # alert only after N failures in a row

# Links in mails point here.
KONG_BASE_URL = f"http://127.0.0.1:{os.environ.get('KONG_DEMO_PORT') or 8000}"

# Six small sites: a few workers are plenty, and the demo should never hang.
KONG_WORKERS = 4
KONG_CHECK_TIMEOUT = 30                 # wall-clock seconds per check (default 60)
KONG_REQUEST_TIMEOUT = 5                # seconds per HTTP request (default 10)

# KONG_SAFE_MODE = True                 # refuse twill commands that run Python or touch files
# KONG_PUBLIC_DASHBOARD = False         # True shows the dashboard without a login
# KONG_RESULT_RETENTION_DAYS = 90       # prune raw results older than this (rollups are kept)
# KONG_WEBHOOKS = []                    # URLs that get a JSON POST on failure and recovery
# KONG_SECRET_VARIABLES = "API|TOKEN|KEY|SECRET|PASS|SIGNATURE"  # site variables masked everywhere
