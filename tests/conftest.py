from __future__ import annotations

from collections.abc import Iterator

import pytest

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
