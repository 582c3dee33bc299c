"""kong.conf: defaults, the lazy accessor, and override_settings."""

from __future__ import annotations

import re

import pytest
from django.test import override_settings

from kong.conf import DEFAULTS, kong_settings

# The settings table the README documents: name -> default.
DOCUMENTED = {
    "MAIL_MANAGERS": False,
    "MAIL_ADMINS": False,
    "MAIL_ON_RECOVERY": True,
    "MAIL_ON_EVERY_FAILURE": False,
    "MAIL_ON_CONSECUTIVE_FAILURES": 1,
    "RESET_BROWSER": True,
    "SAFE_MODE": True,
    "WORKERS": 8,
    "CHECK_TIMEOUT": 60,
    "REQUEST_TIMEOUT": 10,
    "RESULT_RETENTION_DAYS": 90,
    "WEBHOOKS": [],
    "PUBLIC_DASHBOARD": False,
}


@pytest.mark.parametrize(("name", "default"), DOCUMENTED.items())
def test_every_documented_setting_has_its_documented_default(name, default):
    assert DEFAULTS[name] == default


def test_defaults_apply_when_a_setting_is_absent():
    assert kong_settings.SAFE_MODE is True
    assert kong_settings.MAIL_ON_CONSECUTIVE_FAILURES == 1


def test_project_settings_win_over_defaults():
    assert kong_settings.WORKERS == 2  # tests/settings.py
    assert kong_settings.BASE_URL == "http://kong.example.com"


def test_override_settings_is_seen_at_once_and_undone_after():
    assert kong_settings.MAIL_MANAGERS is False
    with override_settings(KONG_MAIL_MANAGERS=True, KONG_WORKERS=0):
        assert kong_settings.MAIL_MANAGERS is True
        assert kong_settings.WORKERS == 0
    assert kong_settings.MAIL_MANAGERS is False
    assert kong_settings.WORKERS == 2


def test_unknown_names_are_an_attribute_error():
    with pytest.raises(AttributeError, match="unknown Kong setting: KONG_NOPE"):
        kong_settings.NOPE  # noqa: B018


def test_the_readme_documents_every_setting():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = text.split("## Settings")[1].split("## Alerts")[0]
    documented = set(re.findall(r"^\| `KONG_(\w+)` \|", table, re.MULTILINE))
    assert documented == set(DEFAULTS)


def test_every_setting_has_a_typed_accessor():
    from kong.conf import DEFAULTS, KongSettings

    assert set(KongSettings.__annotations__) == set(DEFAULTS)
