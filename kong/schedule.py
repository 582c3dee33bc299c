"""Cron maths for test schedules (croniter). Due times are stored in UTC.

Schedules are read in the schedule time zone: ``KONG_TIME_ZONE``, else
``TIME_ZONE``. Daylight-saving changes follow the rule Vixie cron uses:

- a schedule whose minute or hour field starts with ``*`` (``*/10 * * * *``,
  ``0 * * * *``) fires in real time, so it keeps firing through the
  repeated hour of a fall-back night;
- a fixed-time schedule (``30 1 * * *``) fires once per wall-clock time:
  on a fall-back night 01:30 happens twice, and the test runs once. A time
  skipped by a spring-forward change fires at the first moment after it.
"""

from __future__ import annotations

import logging
import threading
import zoneinfo
from collections import OrderedDict
from datetime import UTC, datetime, tzinfo
from functools import lru_cache

from croniter import croniter
from django.conf import settings
from django.core.exceptions import ValidationError

from kong.conf import kong_settings

logger = logging.getLogger("kong.schedule")

DEFAULT_SCHEDULE = "*/10 * * * *"
FIELDS = "minute hour day-of-month month day-of-week"


class ScheduleError(ValueError):
    """A schedule that is not a usable 5-field cron expression."""


def schedule_timezone() -> tzinfo:
    """``KONG_TIME_ZONE``, else ``TIME_ZONE``, else UTC. Raises
    ScheduleError for an unknown zone name."""
    name = kong_settings.TIME_ZONE or getattr(settings, "TIME_ZONE", None) or "UTC"
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise ScheduleError(f"unknown time zone {name!r}") from error


def validate_schedule(expression: str) -> None:
    """Return None when ``expression`` is a 5-field cron expression that
    fires at least once; raise ScheduleError with a message a person can act
    on otherwise (6 fields, bad values, or a date that never comes)."""
    fields = str(expression).split()
    if len(fields) != 5:
        raise ScheduleError(
            f"a schedule needs exactly 5 fields ({FIELDS}), got {len(fields)}: {expression!r}"
        )
    if not croniter.is_valid(expression):
        raise ScheduleError(f"{expression!r} is not a valid cron expression ({FIELDS})")
    try:
        croniter(expression, datetime(2000, 1, 1)).get_next(datetime)
    except Exception as error:  # croniter raises CroniterBadDateError for dates that never come
        raise ScheduleError(f"{expression!r} never fires (no such date in 50 years)") from error


def validate_schedule_field(value: str) -> None:
    """The model field validator: ScheduleError as a Django ValidationError."""
    try:
        validate_schedule(value)
    except ScheduleError as error:
        raise ValidationError(str(error), code="invalid_schedule") from error


@lru_cache(maxsize=1024)
def is_valid(expression: str) -> bool:
    """True when ``expression`` passes ``validate_schedule`` (cached)."""
    try:
        validate_schedule(expression)
    except ScheduleError:
        return False
    return True


def next_run(expression: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that ``expression`` fires, in UTC.

    ``after`` must be timezone-aware. Several missed slots collapse into one:
    the answer is always in the future of ``after``. An invalid expression
    (which ``Test.save`` and system check kong.E010 refuse, but a raw
    ``update()`` can store) falls back to DEFAULT_SCHEDULE with a logged
    error, so one bad row never stops the fleet's checks.
    """
    if not is_valid(expression):
        logger.error("invalid schedule %r; using %r until it is fixed", expression, DEFAULT_SCHEDULE)
        expression = DEFAULT_SCHEDULE
    local = after.astimezone(schedule_timezone())
    with _LOCK:
        times = _iterator(expression)
        times.set_current(local, force=True)
        following: datetime = times.get_next(datetime)
        if not _fires_in_real_time(expression):
            # Fall-back: the same wall-clock time comes round again an hour
            # later; it was this slot, so skip to the next distinct one.
            wall = local.replace(tzinfo=None)
            while following.replace(tzinfo=None) <= wall:
                following = times.get_next(datetime)
    return following.astimezone(UTC)


def _fires_in_real_time(expression: str) -> bool:
    minute, hour = expression.split()[:2]
    return minute.startswith("*") or hour.startswith("*")


# Parsing an expression costs more than finding its next time; a fleet has
# few distinct schedules, so keep their parsed iterators (guarded: the
# iterators are stateful and views may call next_run from several threads).
_LOCK = threading.Lock()
_ITERATORS: OrderedDict[str, croniter] = OrderedDict()
_MAX_ITERATORS = 256


def _iterator(expression: str) -> croniter:
    times = _ITERATORS.get(expression)
    if times is None:
        times = croniter(expression, datetime(2000, 1, 1, tzinfo=UTC))
        _ITERATORS[expression] = times
        if len(_ITERATORS) > _MAX_ITERATORS:
            _ITERATORS.popitem(last=False)
    return times
