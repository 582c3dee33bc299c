"""kong.schedule: cron validation, UTC due times, time zones and DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ValidationError
from django.test import override_settings

from kong import schedule, services
from kong.models import Check, Test
from kong.schedule import ScheduleError, next_run, validate_schedule
from tests.factories import make_site, make_test

NEW_YORK = "America/New_York"  # fall-back: 2025-11-02 02:00 EDT -> 01:00 EST


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def fire_times(expression: str, start: datetime, end: datetime, runtime: timedelta) -> list[datetime]:
    """When a check on ``expression`` starts, if every run takes ``runtime``
    and the next due time is computed when it ends (as services.record does)."""
    times, due = [], next_run(expression, start)
    while due < end:
        times.append(due)
        due = next_run(expression, due + runtime)
    return times


# -- validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 */5 * * * *", "needs exactly 5 fields"),
        ("*/10 * * *", "needs exactly 5 fields"),
        ("@daily", "needs exactly 5 fields"),
        ("0 0 31 2 *", "never fires"),
        ("61 * * * *", "not a valid cron expression"),
        ("0 0 * * mon-xyz", "not a valid cron expression"),
    ],
)
def test_unusable_schedules_are_refused_with_a_clear_message(expression, message):
    with pytest.raises(ScheduleError, match=message):
        validate_schedule(expression)


@pytest.mark.parametrize("expression", ["*/10 * * * *", "30 1 * * *", "0 9 * * mon-fri", "0 0 29 2 *"])
def test_usable_schedules_pass(expression):
    validate_schedule(expression)
    assert schedule.is_valid(expression)


@pytest.mark.django_db
@pytest.mark.parametrize("expression", ["0 */5 * * * *", "0 0 31 2 *"])
def test_saving_a_test_with_an_unusable_schedule_is_refused(expression):
    with pytest.raises(ValidationError) as caught:
        make_test(schedule=expression)
    assert "schedule" in caught.value.message_dict
    assert not Test.objects.exists()


@pytest.mark.django_db
def test_full_clean_reports_the_schedule_field_as_a_form_would():
    test = Test(name="Front", slug="front", body="go http://example.com/", schedule="0 0 31 2 *")
    with pytest.raises(ValidationError) as caught:
        test.full_clean()
    assert caught.value.message_dict["schedule"] == ["'0 0 31 2 *' never fires (no such date in 50 years)"]


@pytest.mark.django_db
def test_a_system_check_reports_schedules_stored_around_save():
    make_test("good")
    make_test("bad")
    Test.objects.filter(slug="bad").update(schedule="* * * * * *")  # update() skips save()
    errors = [error for error in run_checks(databases=["default"]) if error.id == "kong.E010"]
    assert [error.msg for error in errors] == [
        "Test 'bad' has an unusable schedule: a schedule needs exactly 5 fields "
        "(minute hour day-of-month month day-of-week), got 6: '* * * * * *'."
    ]
    assert "kong.E010" not in {error.id for error in run_checks()}  # needs --database


def test_a_bad_stored_schedule_falls_back_to_the_default_instead_of_crashing(caplog):
    after = utc(2026, 1, 1, 12, 3)
    assert (
        next_run("0 0 31 2 *", after) == next_run(schedule.DEFAULT_SCHEDULE, after) == utc(2026, 1, 1, 12, 10)
    )
    assert "invalid schedule '0 0 31 2 *'" in caplog.text


@override_settings(KONG_TIME_ZONE="Mars/Olympus")
def test_an_unknown_time_zone_is_a_system_check_error():
    assert "kong.E011" in {error.id for error in run_checks()}


@override_settings(KONG_RESULT_RETENTION_DAYS="ninety", KONG_CLAIM_LEASE=30)
def test_retention_and_lease_are_checked():
    ids = {error.id for error in run_checks()}
    assert {"kong.E012", "kong.W010"} <= ids


# -- time zones ----------------------------------------------------------------


def test_due_times_are_utc_and_strictly_after():
    due = next_run("*/10 * * * *", utc(2026, 3, 1, 12, 10))
    assert due == utc(2026, 3, 1, 12, 20)
    assert due.tzinfo is UTC


@override_settings(TIME_ZONE="Europe/Paris")
def test_the_schedule_is_read_in_time_zone():
    assert next_run("0 9 * * *", utc(2026, 1, 15, 0, 0)) == utc(2026, 1, 15, 8, 0)  # CET
    assert next_run("0 9 * * *", utc(2026, 7, 15, 0, 0)) == utc(2026, 7, 15, 7, 0)  # CEST


@override_settings(TIME_ZONE="Europe/Paris", KONG_TIME_ZONE="Asia/Tokyo")
def test_kong_time_zone_overrides_time_zone():
    assert next_run("0 9 * * *", utc(2026, 1, 15, 0, 0)) == utc(2026, 1, 16, 0, 0)


def test_many_missed_slots_collapse_into_one_next_run():
    long_ago = utc(2026, 1, 1)
    now = utc(2026, 1, 9, 12, 1)
    assert next_run("*/10 * * * *", now) == utc(2026, 1, 9, 12, 10)
    assert next_run("*/10 * * * *", long_ago) < now  # the stored due time is long past: runs once, now


# -- daylight saving -----------------------------------------------------------


@override_settings(KONG_TIME_ZONE=NEW_YORK)
def test_a_daily_test_runs_once_across_a_dst_fall_back():
    # 01:30 happens twice on 2025-11-02 in New York (05:30 and 06:30 UTC).
    runs = fire_times("30 1 * * *", utc(2025, 11, 1, 12), utc(2025, 11, 3, 12), runtime=timedelta(seconds=3))
    assert runs == [utc(2025, 11, 2, 5, 30), utc(2025, 11, 3, 6, 30)]  # not also 2025-11-02 06:30
    assert [run.astimezone(schedule.schedule_timezone()).hour for run in runs] == [1, 1]


@override_settings(KONG_TIME_ZONE=NEW_YORK)
def test_a_slow_daily_run_finishing_in_the_repeated_hour_still_runs_once():
    runs = fire_times("30 1 * * *", utc(2025, 11, 2, 4), utc(2025, 11, 2, 23), runtime=timedelta(minutes=70))
    assert runs == [utc(2025, 11, 2, 5, 30)]


@override_settings(KONG_TIME_ZONE=NEW_YORK)
def test_frequent_tests_keep_running_through_the_repeated_hour():
    runs = fire_times(
        "*/30 * * * *", utc(2025, 11, 2, 4, 59), utc(2025, 11, 2, 7, 1), runtime=timedelta(seconds=3)
    )
    # 01:00, 01:30 EDT, then 01:00, 01:30 EST, then 02:00 EST: real time, every 30 minutes.
    assert runs == [
        utc(2025, 11, 2, 5),
        utc(2025, 11, 2, 5, 30),
        utc(2025, 11, 2, 6),
        utc(2025, 11, 2, 6, 30),
        utc(2025, 11, 2, 7),
    ]


@override_settings(KONG_TIME_ZONE=NEW_YORK)
def test_a_daily_time_skipped_by_spring_forward_runs_once_that_day():
    # 02:30 does not exist on 2025-03-09 in New York: it runs at 03:00 EDT.
    runs = fire_times("30 2 * * *", utc(2025, 3, 8, 12), utc(2025, 3, 10, 12), runtime=timedelta(seconds=3))
    assert runs == [utc(2025, 3, 9, 7, 0), utc(2025, 3, 10, 6, 30)]


# -- schedule changes ----------------------------------------------------------


@pytest.mark.django_db
def test_changing_a_schedule_moves_the_next_run_of_checks_that_ran():
    site = make_site()
    test = make_test(sites=[site], schedule="0 0 1 1 *")
    services.sync_checks()
    never_ran = Check.objects.get()
    ran = Check.objects.create(test=test, site=make_site("other"), next_due_at=utc(2099, 1, 1))
    test.schedule = "*/5 * * * *"
    test.save()
    ran.refresh_from_db()
    never_ran.refresh_from_db()
    assert ran.next_due_at is not None
    assert ran.next_due_at < utc(2099, 1, 1)
    assert ran.next_due_at.minute % 5 == 0
    assert never_ran.next_due_at is None  # still due at once
