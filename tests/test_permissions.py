"""Who may do what: the admin's model permissions guard tests and the inventory.

The dashboard's own rules (``kong.view_testresult`` for every page,
``kong.run_check`` and a rate limit for run-now) are in tests/test_views.py.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from kong.models import Test
from tests.factories import make_site, make_test, make_user

pytestmark = pytest.mark.django_db


def staff(name: str, *codenames: str):
    user = make_user(name, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames, content_type__app_label="kong"))
    return user


def test_editing_a_test_needs_the_change_test_permission(client):
    """With safe mode off, editing a test is running code on the monitoring host."""
    test = make_test(sites=[make_site()])
    url = reverse("admin:kong_test_change", args=[test.pk])
    client.force_login(staff("reader", "view_test"))
    assert client.get(url).status_code == 200  # may read it...
    response = client.post(url, {"name": "Pwned", "slug": test.slug, "body": 'go "http://x"', "schedule": "* * * * *"})
    assert response.status_code == 403  # ...but not change it
    assert Test.objects.get().name == test.name

    client.force_login(staff("editor", "view_test", "change_test"))
    assert client.get(url).status_code == 200
