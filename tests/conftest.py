from __future__ import annotations

from collections.abc import Iterator

import django
import pytest
from django.conf import settings
from django.test import override_settings

from tests.fleet import FakeSite


@pytest.fixture
def web() -> Iterator[FakeSite]:
    """A real HTTP server on 127.0.0.1 serving a front page with 'Latest News'."""
    site = FakeSite().start()
    yield site
    site.stop()


@pytest.fixture
def hook() -> Iterator[FakeSite]:
    """A second real server on 127.0.0.1, e.g. to receive webhook POSTs."""
    site = FakeSite().start()
    site.route("/hook", body="ok", content_type="text/plain")
    yield site
    site.stop()


@pytest.fixture(autouse=True)
def _locmem_mailer() -> Iterator[None]:
    """Django 6.1 sends mail through settings.MAILERS and warns (an error
    here) when a project has none; give the suite a locmem one so
    ``mail.outbox`` works on every supported Django."""
    if django.VERSION < (6, 1) or hasattr(settings, "MAILERS"):
        yield
        return
    with override_settings(MAILERS={"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}):
        yield


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """Run-now's rate limit counts in the cache; each test starts from zero."""
    from django.core.cache import cache

    cache.clear()
