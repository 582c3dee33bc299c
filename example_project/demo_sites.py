"""Fake Django-ish sites for Kong's demo, served on 127.0.0.1 only.

Standard library only. Each site listens on its own fixed port (18101 and up)
and has what a smoke test touches on a real site: a front page with links, a
GET search form, a POST login form with a CSRF cookie and a session cookie,
an account page, and article (or product) pages. One site is broken the way
real sites break: every page is Django's bare "Server Error (500)", as when
its database is down.

Run ``python example_project/demo_sites.py`` to serve them until Ctrl-C, or
``start()`` them from Python (tests, run_demo.py) and ``stop()`` the result.
"""

from __future__ import annotations

import http.client
import secrets
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
USERNAME = "demo"
# Sent back on every response, so run_demo.py can tell demo sites already
# running on these ports from some other program.
MARKER_HEADER = "X-Kong-Demo"


@dataclass(frozen=True)
class DemoSite:
    """One fake site. ``items`` are (slug, title) pairs: articles or products."""

    slug: str
    name: str
    kind: str  # "news" or "shop"
    port: int
    password: str
    items: tuple[tuple[str, str], ...]
    broken: bool = False

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def item_prefix(self) -> str:
        return "/news/" if self.kind == "news" else "/products/"


# Kept in step with fixtures/demo_fleet.json (servernames, variables).
SITES: tuple[DemoSite, ...] = (
    DemoSite(
        "ljworld", "Lawrence Journal-World", "news", 18101, "ljw-press-pass",
        (("budget-approved", "City commission approves budget"),
         ("river-festival", "River festival returns downtown"),
         ("library-hours", "Library extends weekend hours")),
    ),
    DemoSite(
        "lawrence", "Lawrence.com", "news", 18102, "ldc-night-owl",
        (("live-music", "Live music this weekend"),
         ("new-taqueria", "A new taqueria opens on Mass Street"),
         ("film-series", "Summer film series announced")),
    ),
    DemoSite(
        "kusports", "KUSports", "news", 18103, "kus-rock-chalk",
        (("big-win", "Jayhawks win at the buzzer"),),
        broken=True,
    ),
    DemoSite(
        "bookshop", "Corner Bookshop", "shop", 18104, "books-and-tea",
        (("field-guide", "Prairie field guide"),
         ("cookbook", "Kansas kitchen cookbook"),
         ("atlas", "Road atlas of the plains")),
    ),
    DemoSite(
        "records", "Vinyl Records", "shop", 18105, "spin-the-b-side",
        (("jazz-lp", "Kansas City jazz LP"),
         ("folk-lp", "Prairie folk songs"),
         ("turntable", "Belt-drive turntable")),
    ),
    DemoSite(
        "garden", "Garden Supplies", "shop", 18106, "tomato-season",
        (("seed-kit", "Heirloom seed kit"),
         ("trowel", "Steel hand trowel"),
         ("rain-barrel", "Rain barrel, 50 gallons")),
    ),
)  # fmt: skip


def _page(site: DemoSite, title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title></head>\n<body>\n"
        f'<header><a href="/">{escape(site.name)}</a> | <a href="/search/">Search</a> | '
        '<a href="/login/">Log in</a></header>\n'
        f"<main>\n{body}\n</main>\n</body></html>\n"
    )


def _search_form(query: str = "") -> str:
    return (
        '<form id="search" action="/search/" method="get">'
        f'<input type="text" name="q" value="{escape(query)}" aria-label="Search">'
        '<button type="submit">Search</button></form>'
    )


def _login_form(token: str, error: str = "") -> str:
    note = f'<p class="errornote">{escape(error)}</p>' if error else ""
    return (
        f"<h1>Log in</h1>{note}"
        '<form id="login" action="/login/" method="post">'
        f'<input type="hidden" name="csrfmiddlewaretoken" value="{token}">'
        '<label>Username <input type="text" name="username"></label>'
        '<label>Password <input type="password" name="password"></label>'
        '<button type="submit">Log in</button></form>'
    )


class _Handler(BaseHTTPRequestHandler):
    """Routes one request for ``self.site``; subclassed per site by ``start()``."""

    site: DemoSite
    sessions: dict[str, str]  # session id -> username, shared by the site's threads
    protocol_version = "HTTP/1.1"
    server_version = "demo-django"

    def do_GET(self) -> None:
        self.route("GET")

    def do_POST(self) -> None:
        self.route("POST")

    def route(self, method: str) -> None:
        if self.site.broken:
            return self.send(500, "<h1>Server Error (500)</h1>")
        split = urlsplit(self.path)
        path, query = split.path, parse_qs(split.query)
        if path == "/" and method == "GET":
            return self.send(200, self.front_page())
        if path == "/search/" and method == "GET":
            return self.send(200, self.search((query.get("q") or [""])[0]))
        if path == "/login/":
            return self.login(method)
        if path == "/account/":
            return self.account()
        if path == "/logout/":
            return self.redirect("/", cookies={"sessionid": ""})
        if path.startswith(self.site.item_prefix) and method == "GET":
            slug = path[len(self.site.item_prefix) :].strip("/")
            titles = dict(self.site.items)
            if slug in titles:
                return self.send(200, self.item_page(titles[slug]))
        self.send(404, _page(self.site, "Page not found", "<h1>Not Found</h1>"))

    # -- pages ---------------------------------------------------------

    def front_page(self) -> str:
        site = self.site
        links = "".join(f'<li><a href="{site.item_prefix}{slug}/">{escape(title)}</a></li>' for slug, title in site.items)
        if site.kind == "news":
            body = f"<h1>{escape(site.name)}</h1>{_search_form()}<h2>Latest News</h2><ul>{links}</ul>"
        else:
            body = (
                f"<h1>{escape(site.name)}</h1>{_search_form()}<h2>New Arrivals</h2><ul>{links}</ul>"
                "<h2>Latest News</h2><p>Free delivery in Lawrence all summer.</p>"
            )
        return _page(site, site.name, body)

    def search(self, query: str) -> str:
        matches = [(slug, title) for slug, title in self.site.items if query and query.lower() in title.lower()]
        found = "".join(
            f'<li><a href="{self.site.item_prefix}{slug}/">{escape(title)}</a></li>' for slug, title in matches
        )
        count = f"{len(matches)} found" if matches else "No results."
        # The query is echoed HTML-escaped, as Django's autoescaping would.
        body = (
            f"<h1>Search</h1>{_search_form(query)}"
            f"<p>Results for &ldquo;{escape(query)}&rdquo;: {count}</p><ul>{found}</ul>"
        )
        return _page(self.site, f"Search | {self.site.name}", body)

    def item_page(self, title: str) -> str:
        kind = "Article" if self.site.kind == "news" else "Product"
        body = f"<article><h1>{escape(title)}</h1><p>{kind} text for the demo.</p></article>"
        return _page(self.site, f"{title} | {self.site.name}", body)

    def login(self, method: str) -> None:
        if method == "GET":
            token = self.cookies().get("csrftoken") or secrets.token_hex(16)
            return self.send(200, _page(self.site, "Log in", _login_form(token)), cookies={"csrftoken": token})
        form = self.form()
        token = self.cookies().get("csrftoken", "")
        if not token or form.get("csrfmiddlewaretoken") != token:
            return self.send(403, "<h1>Forbidden (403)</h1><p>CSRF verification failed. Request aborted.</p>")
        if form.get("username") == USERNAME and form.get("password") == self.site.password:
            session = secrets.token_hex(16)
            self.sessions[session] = USERNAME
            return self.redirect("/account/", cookies={"sessionid": session})
        error = "Please enter a correct username and password. Note that both fields may be case-sensitive."
        self.send(200, _page(self.site, "Log in", _login_form(token, error)))

    def account(self) -> None:
        user = self.sessions.get(self.cookies().get("sessionid", ""))
        if user is None:
            return self.redirect("/login/?next=/account/")
        body = f'<h1>Your account</h1><p>Welcome, {escape(user)}.</p><p><a href="/logout/">Log out</a></p>'
        self.send(200, _page(self.site, "Your account", body))

    # -- plumbing ------------------------------------------------------

    def cookies(self) -> dict[str, str]:
        jar = SimpleCookie(self.headers.get("Cookie") or "")
        return {name: morsel.value for name, morsel in jar.items()}

    def form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        data = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        return {name: values[0] for name, values in data.items()}

    def redirect(self, location: str, cookies: dict[str, str] | None = None) -> None:
        self.send(302, "", cookies=cookies, headers={"Location": location})

    def send(
        self,
        status: int,
        html: str,
        *,
        cookies: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        payload = html.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header(MARKER_HEADER, self.site.slug)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        for name, value in (cookies or {}).items():
            expiry = "; Max-Age=0" if not value else ""
            self.send_header("Set-Cookie", f"{name}={value}; Path=/; HttpOnly; SameSite=Lax{expiry}")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the demo's terminal for Kong's own output


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Kong's check workers may close keep-alive connections abruptly
        # when a run ends; that is not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class DemoFleet:
    """The running demo sites; ``stop()`` (or leaving the ``with``) shuts them down."""

    def __init__(self, servers: list[tuple[DemoSite, ThreadingHTTPServer]]) -> None:
        self.servers = servers
        self.threads = [
            threading.Thread(target=server.serve_forever, name=f"demo-{site.slug}", daemon=True)
            for site, server in servers
        ]
        for thread in self.threads:
            thread.start()

    @property
    def sites(self) -> list[DemoSite]:
        return [site for site, _ in self.servers]

    def stop(self) -> None:
        """Stop serving and free the ports."""
        for _, server in self.servers:
            server.shutdown()
            server.server_close()
        for thread in self.threads:
            thread.join()

    def __enter__(self) -> DemoFleet:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def start(sites: Iterable[DemoSite] = SITES) -> DemoFleet:
    """Serve ``sites`` on 127.0.0.1 in background threads.

    Returns the running DemoFleet. Raises OSError when a port is taken; the
    ports opened before it are closed again.
    """
    servers: list[tuple[DemoSite, ThreadingHTTPServer]] = []
    try:
        for site in sites:
            handler = type(f"Handler_{site.slug}", (_Handler,), {"site": site, "sessions": {}})
            server = _Server((HOST, site.port), handler)
            servers.append((site, server))
    except OSError:
        for _, server in servers:
            server.server_close()
        raise
    return DemoFleet(servers)


def is_serving(site: DemoSite) -> bool:
    """Whether ``site`` is already served on its port by these demo sites."""
    connection = http.client.HTTPConnection(HOST, site.port, timeout=2)
    try:
        connection.request("GET", "/")
        return connection.getresponse().getheader(MARKER_HEADER) == site.slug
    except OSError:
        return False
    finally:
        connection.close()


def main() -> None:
    """Serve the demo sites in the foreground until Ctrl-C."""
    fleet = start()
    for site in fleet.sites:
        note = "  (broken: every page is a 500)" if site.broken else ""
        print(f"  {site.url}/  {site.name}{note}")
    print("Serving the demo sites; Ctrl-C stops them.")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fleet.stop()


if __name__ == "__main__":
    main()
