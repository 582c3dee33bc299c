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
        # What a production SQLite setup uses: readers never wait for the
        # writer, and a commit does not fsync the whole file.
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
KONG_WORKERS = 64
