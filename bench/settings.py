"""Django settings for the benchmarks: a throw-away SQLite file in WAL mode.

``KONG_BENCH_DB`` names the file (``bench/common.setup_django`` sets it, and
subprocesses such as ``python -m django check_sites --settings=bench.settings``
inherit it).
"""

from __future__ import annotations

import os

SECRET_KEY = "kong-bench-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "kong"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("KONG_BENCH_DB", "/dev/null"),
        # What the README asks of a production SQLite setup (as tests/settings.py):
        # readers never wait for the writer, a commit does not fsync the whole
        # file, and writers take the lock up front and queue for it.
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
KONG_WORKERS = 64
