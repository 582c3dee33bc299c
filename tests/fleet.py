"""A real HTTP server on 127.0.0.1 for tests, with routes set per test."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Route:
    status: int = 200
    body: str = "<html><head><title>Home</title></head><body>Latest News</body></html>"
    delay: float = 0.0
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


class FakeSite:
    """Serves ``routes`` (path -> Route); unknown paths are 404. Counts hits."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {"/": Route()}
        self.hits: dict[str, int] = {}
        self.posts: list[tuple[str, dict[str, list[str]]]] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self.respond()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length).decode()
                site.posts.append((self.path, parse_qs(data)))
                self.respond()

            def respond(self) -> None:
                path = urlsplit(self.path).path
                site.hits[path] = site.hits.get(path, 0) + 1
                route = site.routes.get(path, Route(404, "<html><body>Not Found</body></html>"))
                if route.delay:
                    time.sleep(route.delay)
                payload = route.body.encode()
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in route.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

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

    def start(self) -> FakeSite:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
