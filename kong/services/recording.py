"""Record outcomes: a TestResult per outcome, the Check row's new state and
the alerts' Delivery rows, in one transaction; the outbox sends the alerts
after the commit (``kong.notifiers.outbox``)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import connections, transaction
from django.utils import timezone

from kong import schedule
from kong.engine.runner import Outcome
from kong.masking import mask
from kong.models import Check, TestResult
from kong.notifiers import outbox, targets
from kong.services.jobs import masked_source

logger = logging.getLogger("kong.services")


# When an alert of a storm-sized cohort may be sent: given the alert and
# the recording time, a later time to hold it until, or None (due now).
Hold = Callable[[outbox.Alerted, datetime], datetime | None]


def record(
    check: Check,
    outcome: Outcome,
    *,
    source: str = "",
    token: str = "",
    group: str = "",
    hold: Hold | None = None,
    worker: str = "",
) -> TestResult | None:
    """Store one TestResult and fold it into the Check row, in one
    transaction; see ``record_many``. Returns the result, or None when the
    run no longer holds ``token``'s claim on the check."""
    return record_many([(check, outcome, source)], token=token, group=group, hold=hold, worker=worker)[0]


def local_worker() -> str:
    """Where a local run runs: ``host:pid`` (``TestResult.worker``)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def record_many(
    items: Sequence[tuple[Check, Outcome, str]],
    *,
    token: str = "",
    group: str = "",
    hold: Hold | None = None,
    worker: str = "",
) -> list[TestResult | None]:
    """Store a TestResult per ``(check, outcome, masked source)`` and fold
    each into its Check row, all in one transaction: every result and its
    state change land together or not at all.

    ``token`` is the claim the recording run holds ('' for a run that
    claimed nothing, such as a plain ``check_sites``). A claim belongs to its
    token: a claimed run clears only its own claims, and records nothing for
    a check whose claim it lost (it expired and another run took it over, or
    it was released), because that run records the slot. An unclaimed run
    records and leaves every claim alone. Recording the same claimed item
    twice therefore stores it once.

    A run writes its results in small batches through this (one INSERT, one
    locking read and one UPDATE per batch rather than per check), which keeps
    the parent process, the one step a pool cannot parallelise, cheap.
    The alerts the results cause are written in the same transaction, as
    one pending Delivery per enabled notifier (``outbox.queue_alerts``),
    tagged with ``group`` (the run, whose storms may fold into summaries)
    and held until ``hold(alert, now)`` when that says so; nothing is sent
    here. ``worker`` says where the checks ran (a task worker's id; '' for
    this process, ``host:pid``). Returns the
    results in ``items`` order, None where nothing was recorded.
    """
    now = timezone.now()
    alerting = bool(targets())
    with transaction.atomic():
        # Lock the state rows in pk order (no joins: FOR UPDATE locks the
        # Check rows only). A check whose row is gone keeps its result.
        states = {
            state.pk: state
            for state in Check.objects.select_for_update().filter(pk__in=[c.pk for c, _, _ in items]).order_by("pk")
        }
        kept = [
            (check, outcome, source)
            for check, outcome, source in items
            if not token or (check.pk in states and states[check.pk].claim_token == token)
        ]
        if len(kept) < len(items):
            logger.warning("kong: %d result(s) not recorded: their claim was taken over", len(items) - len(kept))
        where = (worker or local_worker())[:200]
        results = [_new_result(check, outcome, source, now, where) for check, outcome, source in kept]
        TestResult.objects.bulk_create(results)
        changed: list[Check] = []
        alerts: list[outbox.Alerted] = []
        for (check, _, _), result in zip(kept, results, strict=True):
            state = states.get(check.pk)
            if state is None:
                continue
            transition = state.apply_result(result)
            if token:  # an unclaimed run leaves other runs' claims alone
                state.claimed_until = None
                state.claim_token = ""
            state.next_due_at = schedule.next_run(check.test.schedule, now)
            changed.append(state)
            if transition.alert and alerting:
                state.site = check.site  # the storm rules read its type
                alerts.append(outbox.Alerted(state, result, transition.alert))
        _save_states(changed)
        if alerts:
            outbox.queue_alerts(alerts, group=group, hold_until=lambda alert: hold(alert, now) if hold else None, now=now)
    by_item = {id(item[0]): result for item, result in zip(kept, results, strict=True)}
    return [by_item.get(id(check)) for check, _, _ in items]


# What recording a result changes on a Check row.
STATE_FIELDS = [
    "status",
    "status_since",
    "last_result",
    "last_run_at",
    "consecutive_failures",
    "claimed_until",
    "claim_token",
    "next_due_at",
    "alerted_at",
]


def _save_states(states: Sequence[Check]) -> None:
    """UPDATE each state row's ``STATE_FIELDS`` with one ``executemany``.

    ``bulk_update`` builds a CASE expression per field and row, which cost
    about 3 ms of CPU per check, more than running the check itself.
    """
    if not states:
        return
    connection = connections[Check.objects.db]
    quote = connection.ops.quote_name
    fields: list[Any] = [Check._meta.get_field(name) for name in STATE_FIELDS]
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    sql = f"UPDATE {quote(Check._meta.db_table)} SET {assignments} WHERE {quote('id')} = %s"
    rows = [
        [field.get_db_prep_save(getattr(state, field.attname), connection) for field in fields] + [state.pk]
        for state in states
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _new_result(check: Check, outcome: Outcome, source: str, now: datetime, worker: str) -> TestResult:
    secrets = check.site.secret_values()
    reason = mask(outcome.reason, secrets)
    content = mask(outcome.log, secrets)
    if reason:
        content = f"{content.rstrip()}\n\n{outcome.status.upper()}: {reason}\n".lstrip()
    return TestResult(
        test_id=check.test_id,
        site_id=check.site_id,
        server_id=check.server_id,
        location_id=check.location_id,
        worker=worker,
        run_date=now - timedelta(milliseconds=outcome.duration_ms),
        duration=outcome.duration_ms,
        succeeded=outcome.succeeded,
        status=outcome.status,
        reason=reason[:500],
        content=content,
        script=source or masked_source(check),
        failed_line=outcome.failed_line,
    )
