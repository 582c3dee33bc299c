"""What twill's httpx client may do for one check: decode at most a page
limit of bytes per response, make a bounded number of requests per step, and
share one TLS context per process.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Iterator
from functools import cache
from typing import Any

import httpx
from httpx._decoders import IdentityDecoder  # what a response without Content-Encoding uses

# One step (``go``, ``submit``) follows redirects (httpx stops at 20) and
# meta refreshes (twill stops only when a URL repeats): past this many
# requests it is a loop.
MAX_REQUESTS_PER_STEP = 50

class PageTooLarge(Exception):
    """A response decoded to more than the check's page limit."""

    def __init__(self, url: str, read: int, limit: int) -> None:
        self.url, self.read, self.limit = url, read, limit
        super().__init__(f"page larger than the {size(limit)} limit (read {size(read, exact=False)} of {url})")


def size(count: int, *, exact: bool = True) -> str:
    """``"10 MiB"`` (``exact``: no needless decimals) or ``"10.0 MiB"``."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= factor:
            return f"{count / factor:g} {unit}" if exact else f"{count / factor:.1f} {unit}"
    return f"{count} bytes"


class TooManyRequests(Exception):
    """One step made more than MAX_REQUESTS_PER_STEP requests."""

    def __init__(self, url: str) -> None:
        super().__init__(
            f"stopped after {MAX_REQUESTS_PER_STEP} requests in one step, a redirect or meta refresh loop "
            f"(the last was {url})"
        )


def limit_pages(client: httpx.Client, limit: int) -> None:
    """Make every transport of ``client`` (direct, proxies, WSGI) decode
    responses itself, up to ``limit`` bytes (0: no limit), and count the
    requests of each step."""
    client._transport = _CappedTransport(client._transport, limit)
    client._mounts = {
        pattern: None if transport is None else _CappedTransport(transport, limit)
        for pattern, transport in client._mounts.items()
    }


class _CappedTransport(httpx.BaseTransport):
    """Decodes each response body (gzip, deflate, …) as it streams in and
    raises PageTooLarge once the decoded bytes pass ``limit``.

    httpx would decode a whole chunk at once (a 64 KiB gzip chunk can hold
    64 MiB), so the raw bytes are fed to the decoder in small slices: the
    memory a response can take stays within ``limit`` plus a quarter MiB.
    """

    SLICE = 256  # gzip and deflate expand at most ~1032 times

    def __init__(self, transport: httpx.BaseTransport, limit: int) -> None:
        self.transport = transport
        self.limit = limit if limit > 0 else sys.maxsize

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        budget.requests += 1
        budget.last_url = str(request.url)
        if budget.requests > MAX_REQUESTS_PER_STEP:
            raise TooManyRequests(str(request.url))
        response = self.transport.handle_request(request)
        decoder = response._get_content_decoder()  # what httpx itself would use
        headers = response.headers.copy()
        if "content-encoding" in headers:
            del headers["content-encoding"]  # decoded here, so httpx must not again
        stream = _CappedStream(response.stream, decoder, self.limit, str(request.url))  # type: ignore[arg-type]
        return httpx.Response(
            response.status_code, headers=headers, stream=stream, extensions=response.extensions, request=request
        )

    def close(self) -> None:
        self.transport.close()


class Budget:
    """Requests made by the step that is running (checks run one at a time per process)."""

    requests = 0
    last_url = ""


budget = Budget()


class _CappedStream(httpx.SyncByteStream):
    def __init__(self, raw: httpx.SyncByteStream, decoder: Any, limit: int, url: str) -> None:
        self.raw, self.decoder, self.limit, self.url = raw, decoder, limit, url
        self.read = 0

    def __iter__(self) -> Iterator[bytes]:
        slice_ = _CappedTransport.SLICE
        identity = isinstance(self.decoder, IdentityDecoder)
        for chunk in self.raw:
            pieces = [chunk] if identity else (chunk[i : i + slice_] for i in range(0, len(chunk), slice_))
            for piece in pieces:
                yield from self._count(self.decoder.decode(piece))
        yield from self._count(self.decoder.flush())

    def _count(self, data: bytes) -> Iterator[bytes]:
        self.read += len(data)
        if self.read > self.limit:
            raise PageTooLarge(self.url, self.read, self.limit)
        if data:
            yield data

    def close(self) -> None:
        self.raw.close()


@cache
def tls_context(verify: bool) -> ssl.SSLContext:
    """The TLS context httpx would build for ``verify``, built once per process.

    httpx loads the whole CA bundle for every new client (~25 ms of CPU per
    check); sharing one context keeps the behaviour and drops that cost.
    Built in the pool's parent before forking, so workers share it.
    """
    return httpx.create_ssl_context(verify=verify)
