"""Small helpers that build inventory rows for tests."""

from __future__ import annotations

from typing import Any

from kong.models import Server, Site, Test, Type


def make_type(slug: str = "news", **fields: Any) -> Type:
    fields.setdefault("name", slug.title())
    return Type.objects.create(slug=slug, **fields)


def make_server(slug: str = "web1", **fields: Any) -> Server:
    fields.setdefault("name", slug)
    fields.setdefault("hostname", f"{slug}.example.com")
    return Server.objects.create(slug=slug, **fields)


def make_site(slug: str = "ljworld", servername: str = "127.0.0.1:1", **fields: Any) -> Site:
    servers = fields.pop("servers", ())
    fields.setdefault("name", slug.title())
    site = Site.objects.create(slug=slug, servername=servername, **fields)
    site.servers.set(servers)
    return site


def make_test(slug: str = "front-page", body: str = "go {{ site.url }}\ncode 200", **fields: Any) -> Test:
    sites = fields.pop("sites", ())
    types = fields.pop("types", ())
    fields.setdefault("name", slug.replace("-", " ").title())
    test = Test.objects.create(slug=slug, body=body, **fields)
    test.sites.set(sites)
    test.types.set(types)
    return test


def make_user(username: str = "ops", password: str = "pw", *, view: bool = True, run: bool = False, **fields: Any):
    """A user with Kong's view permission (``view``) and run-now's (``run``)."""
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user(username, password=password, **fields)
    codenames = [name for name, wanted in (("view_testresult", view), ("run_check", run)) if wanted]
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames, content_type__app_label="kong"))
    return user
