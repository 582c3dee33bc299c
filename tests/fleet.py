"""A real HTTP server on 127.0.0.1 for tests, with routes set per test."""

from __future__ import annotations

import os
import threading
import time
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
    test can see exactly what a check or a webhook sent.
    """

    def __init__(self) -> None:
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
                payload = route.body.encode()
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
        # A short poll interval keeps stop() (and so every test's teardown) quick.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}{path}"

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
