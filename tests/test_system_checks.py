"""kong.system_checks: misconfiguration shows up in ``manage.py check``."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest
from django.core.checks import CheckMessage, Warning, run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from kong.system_checks import check_settings, longest_check_seconds, pending_migrations, sqlite_file_problems


def ids(**settings: object) -> list[str]:
    with override_settings(**settings):
        return [message.id for message in check_settings()]


@pytest.mark.django_db  # Django's own model checks may ask the database for features
def test_the_defaults_and_the_test_settings_are_clean():
    assert ids() == []
    assert [message for message in run_checks() if message.id and message.id.startswith("kong.")] == []


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("KONG_WORKERS", "many"),
        ("KONG_WORKERS", -1),
        ("KONG_WORKERS", 2.5),
        ("KONG_WORKERS", True),
        ("KONG_CHECK_TIMEOUT", 0),
        ("KONG_CHECK_TIMEOUT", None),
        ("KONG_REQUEST_TIMEOUT", -5),
        ("KONG_MAIL_ON_CONSECUTIVE_FAILURES", 0),
        ("KONG_MAIL_ON_CONSECUTIVE_FAILURES", "3"),
        ("KONG_KILL_GRACE", -1),
    ],
)
def test_e001_bad_numbers(setting, value):
    with override_settings(**{setting: value}):
        (error,) = check_settings()
    assert error.id == "kong.E001"
    assert error.msg.startswith(f"{setting} must be ")
    assert repr(value) in error.msg
    assert error.hint


@pytest.mark.parametrize("value", [0.5, 30, 1])
def test_e001_accepts_good_numbers(value):
    assert ids(KONG_CHECK_TIMEOUT=value, KONG_REQUEST_TIMEOUT=value) == []


@pytest.mark.parametrize(
    "value",
    ["https://hooks.example.com/kong", ["ftp://hooks.example.com/"], [None], {"url": "https://x/"}],
)
def test_e002_webhooks_must_be_a_list_of_http_urls(value):
    assert ids(KONG_WEBHOOKS=value) == ["kong.E002"]


def test_e002_accepts_http_and_https_urls():
    assert ids(KONG_WEBHOOKS=["http://127.0.0.1:9/hook", "https://hooks.example.com/kong"]) == []


def test_e003_notifiers_must_import_and_be_notifiers():
    with override_settings(KONG_NOTIFIERS=["kong.notifiers.nope.Missing", "kong.conf.DEFAULTS"]):
        messages = check_settings()
    assert [message.id for message in messages] == ["kong.E003", "kong.E003"]
    assert "cannot be imported" in messages[0].msg
    assert "is not a subclass of kong.notifiers.Notifier" in messages[1].msg


def test_e004_secret_pattern_must_compile():
    assert ids(KONG_SECRET_VARIABLES="PASS(") == ["kong.E004"]


def test_w001_mail_without_a_base_url():
    assert ids(KONG_MAIL_MANAGERS=True, KONG_BASE_URL="") == ["kong.W001"]
    assert ids(KONG_MAIL_ADMINS=True, KONG_BASE_URL="") == ["kong.W001"]
    assert ids(KONG_MAIL_MANAGERS=False, KONG_MAIL_ADMINS=False, KONG_BASE_URL="") == []


def test_w002_mail_with_nobody_to_mail():
    assert ids(KONG_MAIL_MANAGERS=True, MANAGERS=[]) == ["kong.W002"]
    assert ids(KONG_MAIL_ADMINS=True, ADMINS=[]) == ["kong.W002"]
    assert ids(KONG_MAIL_ADMINS=True, MANAGERS=[]) == []


@pytest.mark.django_db
@override_settings(KONG_WORKERS="many")
def test_errors_stop_manage_py_check():
    with pytest.raises(SystemCheckError, match=r"kong\.E001"):
        call_command("check")


@pytest.mark.django_db
def test_e010_a_stored_schedule_that_never_fires_needs_check_database():
    from kong.models import Test
    from tests.factories import make_test

    make_test("nightly", schedule="0 3 * * *")
    make_test("broken")
    Test.objects.filter(slug="broken").update(schedule="0 0 31 2 *")  # update() skips the validator
    errors = [message for message in run_checks(databases=["default"]) if message.id == "kong.E010"]
    assert [error.msg for error in errors] == [
        "Test 'broken' has an unusable schedule: '0 0 31 2 *' never fires (no such date in 50 years)."
    ]
    assert not [message for message in run_checks() if message.id == "kong.E010"]


def test_e011_unknown_time_zone():
    assert ids(KONG_TIME_ZONE="Mars/Olympus") == ["kong.E011"]
    assert ids(KONG_TIME_ZONE="Europe/Paris") == []


@pytest.mark.parametrize("value", ["ninety", -1, 1.5])
def test_e012_retention_days(value):
    assert ids(KONG_RESULT_RETENTION_DAYS=value) == ["kong.E012"]


@pytest.mark.parametrize("value", [None, 0, 30])
def test_e012_accepts_none_zero_and_days(value):
    assert ids(KONG_RESULT_RETENTION_DAYS=value) == []


def test_w010_a_claim_lease_shorter_than_a_check():
    assert ids(KONG_CLAIM_LEASE=30) == ["kong.W010"]  # default check timeout 60 + grace 5
    assert ids(KONG_CLAIM_LEASE=30, KONG_CHECK_TIMEOUT=20, KONG_KILL_GRACE=5) == []


def database_ids(message_id: str) -> list[CheckMessage]:
    return [message for message in run_checks(databases=["default"]) if message.id == message_id]


@pytest.mark.django_db
def test_w010_with_check_database_weighs_each_active_tests_own_timeout():
    from tests.factories import make_test

    make_test("quick", timeout=30)
    make_test("slow", timeout=600)
    make_test("retired", timeout=900, is_active=False)
    with override_settings(KONG_CLAIM_LEASE=300):
        assert ids() == []  # the settings alone are fine: 60 + 5 <= 300
        (warning,) = database_ids("kong.W010")
    assert warning.msg == (
        "KONG_CLAIM_LEASE (300 s) is shorter than a check may run: "
        "the timeout of test 'slow' (600 s) plus KONG_KILL_GRACE (5 s)."
    )
    assert "at least 605" in warning.hint
    with override_settings(KONG_CLAIM_LEASE=605):
        assert database_ids("kong.W010") == []
    with override_settings(KONG_CLAIM_LEASE=30):  # the settings-only W010 says it, once
        assert [message.msg for message in database_ids("kong.W010")] == [check_settings()[0].msg]


@pytest.mark.django_db
def test_longest_check_seconds_is_what_the_claim_lease_must_cover():
    from tests.factories import make_test

    assert longest_check_seconds() == 65  # KONG_CHECK_TIMEOUT 60 + KONG_KILL_GRACE 5
    make_test("quick", timeout=30)
    assert longest_check_seconds() == 65
    make_test("retired", timeout=900, is_active=False)
    make_test("slow", timeout=600)
    assert longest_check_seconds() == 605
    assert longest_check_seconds(10) == 15  # check_sites --timeout replaces every test's own
    with override_settings(KONG_KILL_GRACE=0, KONG_CHECK_TIMEOUT=1000):
        assert longest_check_seconds() == 1000


@pytest.mark.django_db
def test_w011_is_silent_on_a_migrated_database():
    assert pending_migrations() == []
    assert database_ids("kong.W011") == []


SQLITE_FILE = {"ENGINE": "django.db.backends.sqlite3", "NAME": "/nonexistent/kong.sqlite3"}
RECOMMENDED = {
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
}


def sqlite_ids(**options: object) -> list[str]:
    return [message.id for message in sqlite_file_problems("default", {**SQLITE_FILE, "OPTIONS": options})]


def test_w012_w013_a_sqlite_file_needs_wal_and_immediate_transactions():
    assert sqlite_ids() == ["kong.W012", "kong.W013"]
    assert sqlite_ids(**RECOMMENDED) == []
    assert sqlite_ids(transaction_mode="immediate", init_command="pragma journal_mode = 'wal'") == []
    assert sqlite_ids(transaction_mode="EXCLUSIVE", init_command=RECOMMENDED["init_command"]) == ["kong.W012"]
    assert sqlite_ids(transaction_mode="IMMEDIATE", init_command="PRAGMA synchronous=NORMAL") == ["kong.W013"]
    (w012, w013) = sqlite_file_problems("default", {**SQLITE_FILE, "OPTIONS": {}})
    assert 'DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"' in w012.hint
    assert "PRAGMA journal_mode=WAL" in w013.hint


def test_w013_trusts_a_file_already_in_wal_mode(tmp_path):
    # WAL is a property of the file: an operator may have set it once, by hand.
    for mode, expected in (("wal", []), ("delete", ["kong.W013"])):
        path = tmp_path / f"{mode}.sqlite3"
        with closing(sqlite3.connect(path)) as database:
            database.execute(f"PRAGMA journal_mode={mode}")
            database.execute("CREATE TABLE t (x)")
        settings_dict = {**SQLITE_FILE, "NAME": str(path), "OPTIONS": {"transaction_mode": "IMMEDIATE"}}
        assert [message.id for message in sqlite_file_problems("default", settings_dict)] == expected


def test_w014_a_misspelt_kong_setting_is_named_with_a_suggestion():
    with override_settings(KONG_MAIL_MANAGER=True, KONG_WORKERS=4):
        messages = [message for message in check_settings() if message.id == "kong.W014"]
    assert [message.msg for message in messages] == ["KONG_MAIL_MANAGER is not a Kong setting; Kong ignores it."]
    assert messages[0].hint == "Did you mean KONG_MAIL_MANAGERS?"


def test_each_notifier_checks_its_own_settings_and_only_when_listed():
    from kong.notifiers import Notifier

    class Picky(Notifier):
        @classmethod
        def run_checks(cls) -> list[CheckMessage]:
            return [Warning("picky", id="tests.W001")]

    with override_settings(KONG_NOTIFIERS=["tests.test_system_checks.PICKY"]):
        globals()["PICKY"] = Picky
        try:
            assert "tests.W001" in [message.id for message in check_settings()]
        finally:
            del globals()["PICKY"]
    # The webhook notifier's E002 is not raised when it is not listed.
    with override_settings(KONG_NOTIFIERS=["kong.notifiers.email.EmailNotifier"], KONG_WEBHOOKS="nope"):
        assert "kong.E002" not in [message.id for message in check_settings()]
