"""Cron maths for test schedules (croniter), in UTC for storage."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, tzinfo

from croniter import croniter
from django.conf import settings

from kong.conf import kong_settings


class ScheduleError(ValueError):
    """A schedule that is not a usable 5-field cron expression."""


def schedule_timezone() -> tzinfo:
    """``KONG_TIME_ZONE``, else ``TIME_ZONE``, else UTC."""
    name = kong_settings.TIME_ZONE or getattr(settings, "TIME_ZONE", None) or "UTC"
    return zoneinfo.ZoneInfo(name)


def validate_schedule(expression: str) -> None:
    """Raise ScheduleError unless ``expression`` is a 5-field cron that fires."""
    fields = expression.split()
    if len(fields) != 5:
        raise ScheduleError(
            f"a schedule needs exactly 5 fields (minute hour day month weekday), got {len(fields)}"
        )
    if not croniter.is_valid(expression):
        raise ScheduleError(f"{expression!r} is not a valid cron expression")
    try:
        croniter(expression, datetime(2000, 1, 1), max_years_between_matches=50).get_next(datetime)
    except Exception as error:  # croniter raises CroniterBadDateError for dates that never come
        raise ScheduleError(f"{expression!r} never fires") from error


def next_run(expression: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that ``expression`` fires, in UTC."""
    tz = schedule_timezone()
    local = after.astimezone(tz)
    following = croniter(expression, local).get_next(datetime)
    return following.astimezone(UTC)
