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
