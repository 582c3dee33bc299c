"""kong.rollups and kong_prune: daily rollups, batched pruning, long-range history."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from kong import rollups
from kong.models import Check, DailyRollup, TestResult
from tests.factories import make_server, make_site, make_test

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def day(offset: int, now: datetime = NOW) -> date:
    """The day ``offset`` days before ``now``'s (UTC is the test time zone)."""
    return now.date() - timedelta(days=offset)


@pytest.fixture
def pair():
    site = make_site()
    test = make_test(sites=[site])
    return test, site


def add_results(
    test, site, days_ago: int, durations: list[float], *, failures: int = 0, server=None, now: datetime = NOW
) -> None:
    """Results spread over one day, ``failures`` of them failing."""
    start = datetime.combine(day(days_ago, now), datetime.min.time(), tzinfo=UTC) + timedelta(minutes=5)
    TestResult.objects.bulk_create(
        TestResult(
            test=test,
            site=site,
            server=server,
            run_date=start + timedelta(minutes=10 * index),
            duration=duration,
            succeeded=index >= failures,
            status="passed" if index >= failures else "failed",
        )
        for index, duration in enumerate(durations)
    )


# -- folding -----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_day_folds_into_runs_failures_mean_p95_and_max(pair):
    test, site = pair
    add_results(test, site, 3, [float(ms) for ms in range(1, 21)], failures=2)
    add_results(test, site, 2, [999.0])  # another day: not folded in
    assert rollups.fold_day(day(3)) == 1
    rollup = DailyRollup.objects.get(day=day(3))
    assert (rollup.runs, rollup.failures) == (20, 2)
    assert (rollup.mean_duration, rollup.p95_duration, rollup.max_duration) == (10.5, 19.0, 20.0)


@pytest.mark.django_db
def test_folding_a_day_again_is_idempotent(pair):
    test, site = pair
    add_results(test, site, 3, [10.0, 20.0, 30.0])
    rollups.fold_day(day(3))
    rollups.fold_day(day(3))
    assert list(DailyRollup.objects.values_list("runs", "mean_duration")) == [(3, 20.0)]


@pytest.mark.django_db
def test_each_check_and_server_gets_its_own_rollup(pair):
    test, site = pair
    web1, web2 = make_server("web1"), make_server("web2")
    add_results(test, site, 3, [10.0, 10.0], server=web1)
    add_results(test, site, 3, [30.0], server=web2)
    add_results(test, make_site("other"), 3, [50.0])
    assert rollups.fold_day(day(3)) == 3
    assert sorted(DailyRollup.objects.values_list("runs", "max_duration")) == [
        (1, 30.0),
        (1, 50.0),
        (2, 10.0),
    ]


def test_percentile_is_nearest_rank():
    assert rollups.percentile([], 0.95) is None
    assert rollups.percentile([5.0], 0.95) == 5.0
    assert rollups.percentile([float(n) for n in range(1, 101)], 0.95) == 95.0


# -- pruning -----------------------------------------------------------------------


@pytest.mark.django_db
@override_settings(KONG_RESULT_RETENTION_DAYS=30)
def test_prune_folds_then_deletes_old_raw_results_in_batches(pair):
    test, site = pair
    for days_ago in (200, 45, 31, 30, 1, 0):
        add_results(test, site, days_ago, [100.0, 200.0, 300.0], failures=1)
    report = rollups.prune(NOW, batch_size=2)
    assert report.cutoff == datetime.combine(day(30), datetime.min.time(), tzinfo=UTC)
    assert report.deleted == 9  # 200, 45 and 31 days ago
    assert report.folded_days == report.rollups == 5  # every complete day with results; today stays raw
    assert sorted({result.run_date.date() for result in TestResult.objects.all()}) == [
        day(30),
        day(1),
        day(0),
    ]
    assert set(DailyRollup.objects.values_list("day", flat=True)) == {day(n) for n in (200, 45, 31, 30, 1)}
    again = rollups.prune(NOW)
    assert (again.deleted, again.folded_days) == (0, 0)


@pytest.mark.django_db
def test_pruning_clears_a_check_s_pointer_to_a_deleted_result(pair):
    test, site = pair
    add_results(test, site, 120, [10.0])
    check = Check.objects.create(test=test, site=site, last_result=TestResult.objects.get())
    rollups.prune(NOW, retention_days=90)
    check.refresh_from_db()
    assert check.last_result is None
    assert not TestResult.objects.exists()


@pytest.mark.django_db
def test_a_prune_that_died_half_way_through_a_day_loses_nothing(pair):
    test, site = pair
    add_results(test, site, 100, [10.0, 20.0, 30.0, 40.0])
    rollups.fold_day(day(100))
    TestResult.objects.filter(duration__gt=20).delete()  # the first batch went, then the process died
    rollups.prune(NOW, retention_days=90)
    assert list(DailyRollup.objects.values_list("runs", "max_duration")) == [(4, 40.0)]  # not refolded
    assert not TestResult.objects.exists()


@pytest.mark.django_db
def test_a_time_budget_stops_between_steps_and_the_next_call_carries_on(pair):
    test, site = pair
    for days_ago in (100, 99, 98):
        add_results(test, site, days_ago, [10.0])
    first = rollups.prune(NOW, retention_days=90, time_budget=0)
    assert not first.complete
    while not rollups.prune(NOW, retention_days=90, time_budget=0).complete:
        pass
    assert not TestResult.objects.exists()
    assert DailyRollup.objects.count() == 3


@pytest.mark.django_db
def test_retention_zero_keeps_raw_results_but_still_rolls_up(pair):
    test, site = pair
    add_results(test, site, 400, [10.0])
    report = rollups.prune(NOW, retention_days=0)
    assert report.cutoff is None
    assert report.deleted == 0
    assert TestResult.objects.count() == 1
    assert DailyRollup.objects.count() == 1


@pytest.mark.django_db
def test_kong_prune_command(pair, capsys):
    test, site = pair
    now = timezone.now()  # the command prunes relative to the clock
    add_results(test, site, 200, [10.0, 20.0], now=now)
    add_results(test, site, 1, [10.0], now=now)
    call_command("kong_prune", "--dry-run")
    assert "would fold 2 days and delete 2 results older than" in capsys.readouterr().out
    assert TestResult.objects.count() == 3
    call_command("kong_prune", "--batch-size", "1")
    assert "folded 2 days into 2 daily rollups; deleted 2 results" in capsys.readouterr().out
    assert TestResult.objects.count() == 1
    call_command("kong_prune", "--quiet")
    assert capsys.readouterr().out == ""


# -- history -----------------------------------------------------------------------


@pytest.mark.django_db
def test_history_keeps_the_long_range_after_pruning(pair):
    test, site = pair
    add_results(test, site, 150, [100.0, 300.0], failures=1)
    add_results(test, site, 2, [10.0, 30.0])
    add_results(test, site, 0, [50.0])  # today: raw only
    before = rollups.daily_history(test, site, days=365, now=NOW)
    rollups.prune(NOW, retention_days=90)
    after = rollups.daily_history(test, site, days=365, now=NOW)
    assert after == before
    assert len(after) == 365
    assert after[0].day == day(364)
    assert after[-1].day == day(0)
    by_day = {stats.day: stats for stats in after if stats.runs}
    assert set(by_day) == {day(150), day(2), day(0)}
    assert (by_day[day(150)].runs, by_day[day(150)].failures, by_day[day(150)].mean_duration) == (2, 1, 200.0)
    assert by_day[day(150)].success_rate == 0.5
    assert by_day[day(0)].max_duration == 50.0
    assert after[10].runs == 0
    assert after[10].success_rate is None


@pytest.mark.django_db
def test_history_combines_servers_unless_one_is_asked_for(pair):
    test, site = pair
    web1, web2 = make_server("web1"), make_server("web2")
    add_results(test, site, 5, [10.0, 10.0, 10.0], server=web1)
    add_results(test, site, 5, [40.0], failures=1, server=web2)
    rollups.prune(NOW, retention_days=90)  # folds day 5
    (combined,) = [stats for stats in rollups.daily_history(test, site, days=7, now=NOW) if stats.runs]
    assert (combined.runs, combined.failures, combined.mean_duration, combined.max_duration) == (
        4,
        1,
        17.5,
        40.0,
    )
    (one,) = [stats for stats in rollups.daily_history(test, site, web2, days=7, now=NOW) if stats.runs]
    assert (one.runs, one.failures, one.mean_duration) == (1, 1, 40.0)


@pytest.mark.django_db
def test_history_is_a_constant_number_of_queries(pair, django_assert_max_num_queries):
    test, site = pair
    for days_ago in range(0, 200, 7):
        add_results(test, site, days_ago, [10.0])
    rollups.prune(NOW, retention_days=90)
    with django_assert_max_num_queries(3):
        history = rollups.daily_history(test, site, days=365, now=NOW)
    assert sum(stats.runs for stats in history) == len(range(0, 200, 7))


@pytest.mark.django_db
@override_settings(KONG_TIME_ZONE="Pacific/Auckland")
def test_days_are_calendar_days_in_the_schedule_time_zone(pair):
    test, site = pair
    # 2026-06-15 11:30 UTC is 23:30 in Auckland (UTC+12); 12:30 UTC is the next day there.
    for hour in (11, 12):
        TestResult.objects.create(test=test, site=site, run_date=datetime(2026, 6, 15, hour, 30, tzinfo=UTC))
    rollups.prune(datetime(2026, 6, 20, tzinfo=UTC), retention_days=90)
    assert sorted(DailyRollup.objects.values_list("day", flat=True)) == [date(2026, 6, 15), date(2026, 6, 16)]


@pytest.mark.postgres
@pytest.mark.skipif(
    os.environ.get("KONG_TEST_DATABASE") != "postgres", reason="needs KONG_TEST_DATABASE=postgres"
)
@pytest.mark.django_db
def test_fold_and_prune_on_postgresql(pair):
    assert connection.vendor == "postgresql"
    test, site = pair
    add_results(test, site, 120, [10.0, 20.0], server=make_server("web1"))
    add_results(test, site, 120, [30.0])
    rollups.fold_day(day(120))
    rollups.fold_day(day(120))  # the partial unique constraints take the refold
    report = rollups.prune(NOW, retention_days=90, batch_size=1)
    assert (report.deleted, DailyRollup.objects.count()) == (3, 2)
    assert [stats.runs for stats in rollups.daily_history(test, site, days=130, now=NOW) if stats.runs] == [3]
