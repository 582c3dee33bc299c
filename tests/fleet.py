"""A real HTTP server on 127.0.0.1 for tests, with routes set per test."""

from __future__ import annotations

import gzip
import os
import socket
import ssl
import subprocess
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Route:
    status: int = 200
    body: str = "<html><head><title>Home</title></head><body>Latest News</body></html>"
    delay: float = 0.0
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    # Called (in the server's thread) when the route is hit, before any delay.
    on_request: Callable[[Request], Any] | None = None
    # Raw bytes to send instead of ``body`` (binary pages, gzip bombs).
    payload: bytes | None = None
    # Writes the whole response itself, given the request handler (resets,
    # trickles, silences); ``status``, ``body`` and ``headers`` are then
    # unused. The connection closes afterwards, so a complete response
    # should say "Connection: close".
    respond: Callable[[BaseHTTPRequestHandler], Any] | None = None


@dataclass
class Request:
    """One request the site received, as the test sees it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


class FakeSite:
    """Serves ``routes`` (path -> Route); unknown paths are 404. Counts hits.

    ``requests`` records every request (method, path, headers, raw body) so a
    test can see exactly what a check or a webhook sent. With ``tls`` (an
    ``ssl.SSLContext`` for a server) it serves https.
    """

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.scheme = "https" if tls else "http"
        self.routes: dict[str, Route] = {"/": Route()}
        self.hits: dict[str, int] = {}
        self.posts: list[tuple[str, dict[str, list[str]]]] = []
        self.requests: list[Request] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self.respond(b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length)
                site.posts.append((self.path, parse_qs(data.decode(errors="replace"))))
                self.respond(data)

            def respond(self, data: bytes) -> None:
                parts = urlsplit(self.path)
                path = parts.path
                request = Request(
                    method=self.command,
                    path=path,
                    query=parse_qs(parts.query),
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=data,
                )
                site.requests.append(request)
                site.hits[path] = site.hits.get(path, 0) + 1
                route = site.routes.get(path, Route(404, "<html><body>Not Found</body></html>"))
                if route.on_request:
                    route.on_request(request)
                if route.delay:
                    time.sleep(route.delay)
                if route.respond:
                    try:
                        route.respond(self)
                    except OSError:
                        pass
                    self.close_connection = True
                    return
                payload = route.body.encode() if route.payload is None else route.payload
                try:
                    self.send_response(route.status)
                    self.send_header("Content-Type", route.content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in route.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (a timeout, a killed worker): expected in tests

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client hanging up mid-request is what timeout tests do

        self.server = Server(("127.0.0.1", 0), Handler)
        if tls:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        # A short poll interval keeps stop() (and so every test's teardown) quick.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://{self.host}{path}"

    def route(self, path: str, status: int = 200, body: str | None = None, **options: object) -> Route:
        route = Route(status=status, **options)  # type: ignore[arg-type]
        if body is not None:
            route.body = body
        self.routes[path] = route
        return route

    def requests_to(self, path: str) -> list[Request]:
        return [request for request in self.requests if request.path == path]

    def start(self) -> FakeSite:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A 127.0.0.1 port with nothing listening (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_pids(parent: int | None = None) -> list[int]:
    """Live child processes of ``parent`` (default: this process), from /proc.

    Lets a test SIGKILL a pool worker from outside, as the OOM killer would.
    """
    parent = os.getpid() if parent is None else parent
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after ")".
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[1]) == parent:
            children.append(int(entry.name))
    return children


# -- misbehaving servers ---------------------------------------------------------


def gzip_bomb(decoded_bytes: int) -> bytes:
    """A gzip stream that is tiny on the wire and ``decoded_bytes`` of zeros decoded."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    block = bytes(1 << 20)
    parts = []
    for _ in range(decoded_bytes // len(block)):
        parts.append(compressor.compress(block))
    parts.append(compressor.compress(bytes(decoded_bytes % len(block))))
    parts.append(compressor.flush())
    return b"".join(parts)


def gzipped(text: str) -> bytes:
    return gzip.compress(text.encode())


def reset_mid_body(handler: BaseHTTPRequestHandler) -> None:
    """Promise 100,000 bytes, send 1,000, then reset the connection (RST, not FIN)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/html")
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    handler.wfile.write(b"<html><body>" + b"x" * 1000)
    handler.wfile.flush()
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    handler.connection.close()


def trickle(seconds_per_byte: float, total: int = 10_000) -> Callable[[BaseHTTPRequestHandler], None]:
    """A response that sends one byte every ``seconds_per_byte``: each read
    succeeds within the read timeout, and the page never ends in time."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(total))
        handler.send_header("Connection", "close")
        handler.end_headers()
        for _ in range(total):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(seconds_per_byte)

    return respond


class RawServer:
    """A TCP listener on 127.0.0.1 with no HTTP in it.

    ``mode="silent"`` never calls ``accept``: the kernel completes the
    handshake, the request is sent, and no answer ever comes.
    ``mode="hang-up"`` accepts, reads the first bytes (a TLS ClientHello,
    say) and closes the connection.
    """

    def __init__(self, mode: str = "silent") -> None:
        self.mode = mode
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.socket.settimeout(0.05)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    def _serve(self) -> None:
        while not self.stopped.is_set():
            if self.mode == "silent":
                self.stopped.wait(0.05)
                continue
            try:
                conn, _ = self.socket.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(4096)
                except OSError:
                    pass

    def start(self) -> RawServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(2)
        self.socket.close()


def self_signed_tls(folder: Path) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for
    127.0.0.1, made with the ``openssl`` command line tool."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context
