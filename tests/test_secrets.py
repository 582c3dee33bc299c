"""A secret used by a real login script never shows anywhere Kong writes or serves.

One test, on purpose: a password kept in a nested site variable logs in to a
real form on 127.0.0.1 that checks it, the page echoes it back (in a form
field, HTML-escaped, as JSON, in a link), the script prints it (``echo``,
``show``, ``show_forms``, which cuts long values to 36 characters) and an
assertion fails on it. Then every surface is searched for the password and
its printed forms: the whole database (``dumpdata`` of every app, and a raw
scan of every table), every command output, the mails, the webhook bodies,
every dashboard page and feed, and the admin pages of every Kong model.
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.core import mail
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse

from kong.masking import MASK
from kong.models import Site, Test, TestResult
from tests.factories import make_site, make_test, make_type
from tests.fleet import FakeSite
from tests.test_check_sites import run_inline

# Long enough for twill's show_forms to cut it (at 40 characters), with a quote,
# HTML specials, a non-ASCII letter and a backslash, so that its URL-encoded,
# HTML-escaped, repr and JSON forms all differ from it. No '"' (it could not
# be written inside a quoted twill argument) and valid as a regular expression.
PASSWORD = "zQ8vK2'<&>\u00e9\\-hunter" + "7c41e09b5fa2d863" * 3
# A fragment that every escaping leaves alone: any leak of the start of the
# password (a cut value included) or of its end contains one of these.
FRAGMENTS = (PASSWORD[:6], PASSWORD[-16:], "hunter7c41")


def printed_forms(secret: str) -> set[str]:
    """The forms a leak would take, written out here independently of kong.masking."""
    return {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        html.escape(secret),
        html.escape(secret, quote=False),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        ascii(secret)[1:-1],
        secret.encode("unicode_escape").decode(),
        html.escape(json.dumps(secret)[1:-1]),
        secret[:36],  # what twill's show_forms prints of a long value
        *FRAGMENTS,
    }


NEEDLES = sorted(printed_forms(PASSWORD), key=len, reverse=True)

def occurrences(text: str) -> list[str]:
    """Each place a needle occurs in ``text``, with some context around it."""
    found = []
    for needle in NEEDLES:
        start = text.find(needle)
        while start != -1:
            found.append(text[max(0, start - 40) : start + len(needle) + 40])
            start = text.find(needle, start + 1)
    return found


LOGIN_FORM = """<html><head><title>Sign in</title></head><body>
<form method="post" action="/login/">
<input type="text" name="username"><input type="password" name="password">
<input type="submit" value="Sign in"></form></body></html>"""


def account_page(password: str) -> str:
    """The page after a good login: it echoes the password in every way a careless site might."""
    return f"""<html><head><title>Account</title></head><body>
<h1>Welcome back</h1>
<form name="profile" method="post" action="/profile/">
<input type="text" name="api_token" value="{html.escape(password)}">
<input type="submit" value="Save"></form>
<pre>{html.escape(json.dumps({"password": password}))}</pre>
<a href="/reset/?p={quote_plus(password)}">reset {html.escape(password)}</a>
</body></html>"""


def login_site(web: FakeSite) -> None:
    """/login/ shows the form on GET; a POST with the right password gets the
    account page, any other a 403."""
    login = web.route("/login/", body=LOGIN_FORM)

    def answer(request: Any) -> None:
        if request.method != "POST":
            login.status, login.body = 200, LOGIN_FORM
        elif parse_qs(request.body.decode()).get("password") == [PASSWORD]:
            login.status, login.body = 200, account_page(PASSWORD)
        else:
            login.status, login.body = 403, "<html><body>Wrong password</body></html>"

    login.on_request = answer
    web.route("/status/", body="<html><body>Status: DOWN</body></html>")


# Test A fails on an assertion that quotes the password; test B fails, then
# recovers (a recovery alert); test C is invalid, and its error quotes the
# rendered line, password included.
BODY_LOGIN = """go {{ site.url }}/login/
fv 1 username {{ username }}
fv 1 password "{{ login.password }}"
submit
code 200
find "Welcome back"
show_forms
show
echo "{{ login.password }}"
go {{ site.url }}/login/?next={{ login.password|urlencode }}
title "{{ login.password }}"
"""
BODY_STATUS = """go {{ site.url }}/login/
fv 1 username {{ username }}
fv 1 password "{{ login.password }}"
submit
showforms
go {{ site.url }}/status/
find "Status: OK"
"""
BODY_INVALID = """go {{ site.url }}/login/
echo {{ login.password }}
"""


def run(*args: str) -> tuple[int, str]:
    done = run_inline(*args)
    return done.returncode, done.stdout + done.stderr


def send_pending_alerts() -> None:
    """Alerts go through the delivery outbox when there is one: send what is pending now."""
    try:
        from kong.notifiers import outbox  # type: ignore[attr-defined]
    except ImportError:  # alerts are sent while the run records them
        return
    outbox.send_pending()


def database_dump() -> dict[str, str]:
    """``dumpdata`` of every app, and every text value of every table; the
    Site row's own ``variables`` is left out: that is where the secret is
    stored, by design (the test checks that it is there)."""
    surfaces: dict[str, str] = {}
    buffer = io.StringIO()
    call_command("dumpdata", stdout=buffer)
    objects = json.loads(buffer.getvalue())
    for item in objects:
        if item["model"] == "kong.site":
            stored = item["fields"].pop("variables")
            assert stored["login"]["password"] == PASSWORD
    surfaces["dumpdata (all apps)"] = json.dumps(objects, ensure_ascii=False) + json.dumps(objects)
    site_table, variables_column = Site._meta.db_table, Site._meta.get_field("variables").column
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            columns = [column[0] for column in cursor.description]
            values = []
            for row in cursor.fetchall():
                for column, value in zip(columns, row, strict=True):
                    if table == site_table and column == variables_column:
                        continue
                    if isinstance(value, (bytes, memoryview)):
                        value = bytes(value).decode("utf-8", "replace")
                    if isinstance(value, str):
                        values.append(value)
            surfaces[f"table {table}"] = "\n".join(values)
    return surfaces


def pages(client: Client, site: Site, tests: list[Test]) -> dict[str, str]:
    urls = [
        reverse("kong:index"),
        reverse("kong:dashboard"),
        reverse("kong:failed"),
        reverse("kong:site_detail", args=[site.slug]),
        reverse("kong:metrics"),
        reverse("kong:api_status"),
    ]
    for test in tests:
        urls += [
            reverse("kong:testresult_for_site", args=[site.slug, test.slug]),
            reverse("kong:test_detail", args=[test.slug]),
        ]
    urls += [reverse("kong:result_detail", args=[pk]) for pk in TestResult.objects.values_list("pk", flat=True)]
    for model in admin.site._registry:
        if model._meta.app_label != "kong":
            continue
        info = (model._meta.app_label, model._meta.model_name)
        urls.append(reverse("admin:{}_{}_changelist".format(*info)))
        urls += [
            reverse("admin:{}_{}_change".format(*info), args=[pk])
            for pk in model._default_manager.values_list("pk", flat=True)
        ]
    found = {}
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        found[f"page {url}"] = response.content.decode()
    return found


@pytest.mark.django_db(transaction=True)
def test_a_login_password_is_masked_on_every_surface(web, hook, settings, tmp_path: Path):
    settings.KONG_MAIL_MANAGERS = True
    settings.KONG_MAIL_ON_EVERY_FAILURE = True
    settings.MANAGERS = [("Ops", "ops@example.com")]
    settings.KONG_WEBHOOKS = [hook.url("/hook")]
    login_site(web)
    site = make_site(
        "shop", web.host, name="Shop", type=make_type("shops"),
        variables={"username": "alice", "login": {"password": PASSWORD}},
    )  # fmt: skip
    tests = [
        make_test("login", body=BODY_LOGIN, sites=[site]),
        make_test("status", body=BODY_STATUS, sites=[site]),
        make_test("broken", body=BODY_INVALID, sites=[site]),
    ]
    surfaces: dict[str, str] = {}

    # Every command output: each format, a JUnit file, --dry-run and --list.
    junit = tmp_path / "kong.xml"
    for name, args in (
        ("check_sites (text, verbose)", ("--workers", "0", "-v", "2")),
        ("check_sites --format json (pool)", ("--workers", "1", "--format", "json", "--junit-xml", str(junit))),
        ("check_sites --format nagios", ("--workers", "0", "--format", "nagios")),
        ("check_sites --dry-run", ("--dry-run",)),
        ("check_sites --list", ("--list",)),
    ):
        code, output = run(*args)
        assert code in (0, 2), output
        surfaces[name] = output
    surfaces["check_sites --junit-xml file"] = junit.read_text()
    assert "invalid" in surfaces["check_sites --dry-run"]  # the invalid line was printed, masked

    # Test B recovers: a recovery alert with its full log.
    web.route("/status/", body="<html><body>Status: OK</body></html>")
    code, surfaces["check_sites (recovery run)"] = run("--workers", "0", "--format", "json")
    assert code == 2  # tests A and C still fail
    send_pending_alerts()

    # The password reached the site and logged in; the page echoed it back.
    assert any(post[1].get("password") == [PASSWORD] for post in web.posts)
    login = TestResult.objects.filter(test__slug="login").first()
    assert login is not None
    assert login.status == "failed"
    assert login.failed_line == 11, login.reason
    assert "The title does not contain" in login.reason
    assert "Welcome back" in login.content  # show printed the account page
    assert "api_token" in login.content  # show_forms printed the form
    assert TestResult.objects.filter(test__slug="status", status="passed").exists()
    assert TestResult.objects.filter(test__slug="broken", status="error").exists()

    # Mails and webhooks.
    assert mail.outbox, "no alert mail was sent"
    for number, message in enumerate(mail.outbox):
        surfaces[f"mail {number}: {message.subject}"] = f"{message.subject}\n{message.body}"
    assert any("RECOVERED" in message.subject for message in mail.outbox)
    hooks = hook.requests_to("/hook")
    assert hooks, "no webhook was posted"
    for number, request in enumerate(hooks):
        surfaces[f"webhook {number}"] = request.body.decode()

    # The database, every dashboard page and feed, every admin page.
    surfaces.update(database_dump())
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    surfaces.update(pages(client, site, tests))

    leaks = {name: found for name, text in surfaces.items() if (found := occurrences(text))}
    assert leaks == {}
    assert MASK in surfaces["page " + reverse("kong:result_detail", args=[login.pk])]
    # K: how many surfaces were searched.
    kinds: dict[str, int] = {}
    for name in surfaces:
        kind = "admin page" if name.startswith("page /admin/") else name.split(" ")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"\nK = {len(surfaces)} surfaces searched, 0 occurrences: {kinds}")
    assert len(surfaces) >= 40
