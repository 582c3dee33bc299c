"""The delivery outbox: alerts written as rows with the results that cause
them, and sent after the commit, off the recording path.

- ``queue_alerts`` writes one ``Delivery`` per alert and enabled (notifier,
  target), inside the recording transaction: a result and its alerts land
  together or not at all, so a crash after the commit loses no alert.
- ``Sender`` claims due deliveries with a filtered UPDATE (two senders never
  send one delivery twice), hands each to a small pool of daemon threads (an
  attempt is I/O, bounded by ``KONG_DELIVERY_TIMEOUT``) and records every
  outcome on its row, in the calling thread: threads never touch the
  database. A retryable ``NotifierError`` is tried again after a short
  backoff, up to ``KONG_DELIVERY_RETRIES`` attempts; a permanent one fails
  the delivery at once. The sender never raises over a delivery.
- Storms: before claiming, the sender folds the pending, never-tried
  failures (or recoveries) of one test on at least
  ``KONG_ALERT_SUMMARY_THRESHOLD`` sites of one type, written by one run
  (their ``group``), into one ``summary`` delivery per (notifier, target).
  The fold is one transaction whose UPDATE re-checks that every member is
  still unclaimed and unfolded, so a member is sent once, alone or inside
  its summary, never both. A run holds its storm-sized cohorts until it has
  recorded all of them (``release``), so grouping spans the whole run; a
  run that dies holds them no longer than ``KONG_CLAIM_LEASE``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.db import connections, transaction
from django.db.models import Count, F, Q, QuerySet
from django.utils import timezone

from kong.conf import kong_settings
from kong.models import Alert, Check, Delivery, DeliveryStatus, TestResult
from kong.notifiers import Event, Notifier, NotifierError, Summary, load, targets
from kong.status import FAILING

logger = logging.getLogger("kong.notifiers")

# Attempts in flight at once per sender: sending is I/O, and a dead server
# holds a thread for one timeout.
SENDER_THREADS = 8
# Seconds before the second attempt; doubled for each one after.
RETRY_BACKOFF = 2.0
# kong_scheduler has no run: its failures (and recoveries) of a test on a
# type that could storm wait STORM_WINDOW seconds, and each new one of the
# same test, type and kind waits the others again, up to STORM_MAX_WAIT
# seconds after the first, so a storm spread over a few ticks folds into one.
STORM_WINDOW = 10.0
STORM_MAX_WAIT = 60.0


def new_group() -> str:
    """A group key: one per run (or per batch of ended mutes)."""
    return uuid.uuid4().hex


def claim_lease() -> timedelta:
    """How long a claimed delivery stays claimed: an attempt and its
    bookkeeping. A sender that dies mid-attempt gives it up after this."""
    return timedelta(seconds=2 * kong_settings.DELIVERY_TIMEOUT + 2)


def _unclaimed(now: datetime) -> Q:
    return Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)


# -- writing -----------------------------------------------------------------------


@dataclass(frozen=True)
class Alerted:
    """One alert to queue: ``kind`` ("failure" or "recovery") of ``check``, caused by ``result``."""

    check: Check
    result: TestResult
    kind: str


def queue_alerts(
    alerts: Sequence[Alerted],
    *,
    group: str = "",
    hold_until: Callable[[Alerted], datetime | None] = lambda alert: None,
    now: datetime | None = None,
) -> list[Delivery]:
    """Write one pending Delivery per alert and enabled (notifier, target);
    call it inside the transaction that records the results. ``hold_until``
    says how long an alert waits for the rest of its storm (None: due now).
    Returns the rows written."""
    now = now or timezone.now()
    destinations = targets()
    rows = [
        Delivery(
            site_check=alert.check,
            result=alert.result,
            kind=alert.kind,
            notifier=path,
            target=target,
            group=group,
            created_at=now,
            next_attempt_at=hold_until(alert) or now,
        )
        for alert in alerts
        for path, target in destinations
    ]
    Delivery.objects.bulk_create(rows)
    return rows


def release(group: str, cohort: tuple[int, int] | None = None, *, now: datetime | None = None) -> int:
    """Make the held deliveries of ``group`` (only those of one ``(test_id,
    type_id)`` cohort, if given) due now: their run has recorded the whole
    cohort. Returns how many."""
    held = Delivery.objects.filter(
        group=group, status=DeliveryStatus.PENDING, attempts=0, next_attempt_at__gt=now or timezone.now()
    )
    if cohort is not None:
        held = held.filter(site_check__test_id=cohort[0], site_check__site__type_id=cohort[1])
    return held.update(next_attempt_at=now or timezone.now())


def storm_hold(alert: Alerted, group: str, now: datetime) -> datetime | None:
    """The scheduler's rule (no run to wait for): when the alert's test
    applies to at least the threshold of sites of its type, hold it
    ``STORM_WINDOW`` seconds and wait the same storm's held deliveries again
    (each at most ``STORM_MAX_WAIT`` after it was written). Otherwise None."""
    type_id = alert.check.site.type_id
    if type_id is None:
        return None
    cohort = Check.objects.active().filter(test_id=alert.check.test_id, site__type_id=type_id)
    if cohort.values("site_id").distinct().count() < kong_settings.ALERT_SUMMARY_THRESHOLD:
        return None
    until = now + timedelta(seconds=STORM_WINDOW)
    Delivery.objects.filter(
        group=group,
        kind=alert.kind,
        status=DeliveryStatus.PENDING,
        attempts=0,
        summary__isnull=True,
        site_check__test_id=alert.check.test_id,
        site_check__site__type_id=type_id,
        next_attempt_at__gt=now,
        created_at__gt=now - timedelta(seconds=STORM_MAX_WAIT),
    ).update(next_attempt_at=until)
    return until


def alert_ended_mutes(now: datetime | None = None) -> int:
    """Alert the failures that began under a mute which has ended: checks
    still failing (past the alert threshold) whose failure was never
    alerted. Their deliveries share a group, so a muted storm folds into one
    summary. Returns how many checks were alerted."""
    now = now or timezone.now()
    threshold = max(1, kong_settings.MAIL_ON_CONSECUTIVE_FAILURES)
    ended = Check.objects.active().filter(
        status__in=FAILING,
        alerted_at__isnull=True,
        muted_until__lte=now,
        consecutive_failures__gte=threshold,
        last_result__isnull=False,
    )
    pks = list(ended.values_list("pk", flat=True))
    if not pks:
        return 0
    group = new_group()
    with transaction.atomic():
        checks = Check.objects.select_related("last_result", "site").filter(pk__in=pks)
        # One filtered UPDATE each: a concurrent run that alerted a check meanwhile wins it.
        alerts = [
            Alerted(check, check.last_result, Alert.FAILURE)
            for check in checks
            if check.last_result
            and Check.objects.filter(pk=check.pk, alerted_at__isnull=True).update(alerted_at=now)
        ]
        queue_alerts(alerts, group=group, now=now)
    return len(alerts)


# -- storms ------------------------------------------------------------------------


def _foldable(now: datetime) -> QuerySet[Delivery]:
    return Delivery.objects.filter(
        _unclaimed(now),
        status=DeliveryStatus.PENDING,
        summary__isnull=True,
        attempts=0,
        kind__in=[Alert.FAILURE, Alert.RECOVERY],
        next_attempt_at__lte=now,
        site_check__site__type__isnull=False,
    ).exclude(group="")


class _Raced(Exception):
    """Another sender claimed or folded a member first: undo this fold."""


def fold_storms(now: datetime | None = None) -> list[Delivery]:
    """Fold each storm among the due deliveries into one summary per
    (notifier, target); returns the summaries written."""
    now = now or timezone.now()
    keys = ("group", "kind", "notifier", "target", "site_check__test_id", "site_check__site__type_id")
    storms = (
        _foldable(now)
        .order_by()
        .values(*keys)
        .annotate(sites=Count("site_check__site_id", distinct=True))
        .filter(sites__gte=kong_settings.ALERT_SUMMARY_THRESHOLD)
    )
    summaries = []
    for storm in list(storms):
        members = list(
            _foldable(now)
            .filter(**{key: storm[key] for key in keys})
            .order_by("site_check__site__name", "pk")
            .values_list("pk", "site_check_id")
        )
        try:
            with transaction.atomic():
                summary = Delivery.objects.create(
                    site_check_id=members[0][1],
                    kind=Alert.SUMMARY,
                    notifier=storm["notifier"],
                    target=storm["target"],
                    group=storm["group"],
                    created_at=now,
                    next_attempt_at=now,
                )
                folded = _foldable(now).filter(pk__in=[pk for pk, _ in members]).update(summary=summary)
                if folded != len(members):
                    raise _Raced
        except _Raced:
            continue
        summaries.append(summary)
    return summaries


# -- sending -----------------------------------------------------------------------


def claim(token: str, *, limit: int, now: datetime | None = None) -> list[Delivery]:
    """Claim up to ``limit`` due deliveries (oldest due first) with
    ``token``, counting the attempt, and return exactly those. The UPDATE
    repeats the conditions, so a concurrent sender's claim skips them."""
    now = now or timezone.now()
    due = Delivery.objects.filter(
        _unclaimed(now), status=DeliveryStatus.PENDING, summary__isnull=True, next_attempt_at__lte=now
    )
    candidates = list(due.order_by("next_attempt_at", "pk").values_list("pk", flat=True)[: max(0, limit)])
    if not candidates or not due.filter(pk__in=candidates).update(
        claim_token=token, claimed_until=now + claim_lease(), attempts=F("attempts") + 1
    ):
        return []
    return list(
        Delivery.objects.filter(claim_token=token, status=DeliveryStatus.PENDING).select_related(
            "site_check", "result__site__type", "result__test", "result__server"
        )
    )


def message_for(delivery: Delivery) -> Event | Summary:
    """What to send for ``delivery``, with everything it needs loaded (the
    sender thread never touches the database)."""
    if delivery.kind != Alert.SUMMARY:
        if delivery.result is None:
            raise NotifierError("its result was deleted")
        return Event(kind=delivery.kind, check=delivery.site_check, result=delivery.result)
    members = list(
        delivery.members.select_related(
            "site_check", "result__site__type", "result__test", "result__server"
        ).order_by("result__site__name", "pk")
    )
    events = tuple(
        Event(kind=m.kind, check=m.site_check, result=m.result) for m in members if m.result is not None
    )
    if not events:
        raise NotifierError("its results were deleted")
    first = events[0].result
    cohort = Check.objects.active().filter(test_id=first.test_id, site__type=first.site.type)
    total = cohort.values("site_id").distinct().count()
    return Summary(
        alert=members[0].kind, test=first.test, site_type=first.site.type, events=events, total=total
    )


def _attempt(notifier: Notifier, message: Event | Summary) -> None:
    """One delivery attempt, in a sender thread."""
    try:
        if isinstance(message, Summary):
            notifier.send_summary(message)
        else:
            notifier.send(message)
    finally:
        connections.close_all()  # this thread's own, should a notifier have opened one


def backoff(attempts: int) -> timedelta:
    """How long a delivery waits after its ``attempts``-th failed attempt."""
    return timedelta(seconds=RETRY_BACKOFF * 2 ** max(0, attempts - 1))


def record_outcome(
    delivery: Delivery, token: str, error: BaseException | None, now: datetime | None = None
) -> str:
    """Record one attempt on ``delivery`` (and on a summary's members), if
    ``token`` still holds its claim. Returns the delivery's new status."""
    now = now or timezone.now()
    mine = Delivery.objects.filter(pk=delivery.pk, claim_token=token)
    free = {"claim_token": "", "claimed_until": None}
    if error is None:
        status, changes = DeliveryStatus.SENT, {"status": DeliveryStatus.SENT, "sent_at": now, "error": ""}
    else:
        retry = error.retry if isinstance(error, NotifierError) else isinstance(error, OSError)
        text = str(error) if isinstance(error, NotifierError) else f"{type(error).__name__}: {error}"
        if retry and delivery.attempts < kong_settings.DELIVERY_RETRIES:
            status = DeliveryStatus.PENDING
            changes = {"error": text, "next_attempt_at": now + backoff(delivery.attempts)}
        else:
            status, changes = DeliveryStatus.FAILED, {"status": DeliveryStatus.FAILED, "error": text}
        logger.warning(
            "kong: %s could not deliver %s #%s (attempt %d, %s): %s",
            delivery.notifier_label, delivery.kind, delivery.pk, delivery.attempts, status, text,
        )  # fmt: skip
    with transaction.atomic():
        if mine.update(**changes, **free) and status != DeliveryStatus.PENDING:
            delivery.members.update(status=status, sent_at=changes.get("sent_at"), error=changes["error"])
    return status


class _DaemonPool:
    """A few daemon threads: an attempt that outlives the run (a server that
    never answers) never holds up the process's exit."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.jobs: queue.SimpleQueue[tuple[Future[None], Callable[[], None]]] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []

    def submit(self, job: Callable[[], None]) -> Future[None]:
        future: Future[None] = Future()
        self.jobs.put((future, job))
        if len(self.threads) < self.size:
            thread = threading.Thread(target=self._work, name="kong-sender", daemon=True)
            thread.start()
            self.threads.append(thread)
        return future

    def _work(self) -> None:
        while True:
            future, job = self.jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                job()
            except BaseException as error:  # handed to the sender, never lost
                future.set_exception(error)
            else:
                future.set_result(None)


@dataclass
class _InFlight:
    delivery: Delivery
    token: str
    now: datetime  # the sender's clock when claimed: retries back off from it


class Sender:
    """Sends due deliveries in the background of a run or the scheduler.

    ``pump()`` never blocks: it records attempts that finished, folds
    storms, and claims due deliveries for its idle threads. ``finish()``
    waits for what is in flight, at most one ``KONG_DELIVERY_TIMEOUT`` by
    default; an attempt still running then keeps its claim until the lease
    ends, and the next run or tick sends the delivery again.

    Every database step runs in the calling thread, and only outside a
    transaction (``after_commit``): a delivery is sent only once its
    result is committed.
    """

    def __init__(self, threads: int = SENDER_THREADS, *, after_commit: bool = True) -> None:
        self.pool = _DaemonPool(max(1, threads))
        self.in_flight: dict[Future[None], _InFlight] = {}
        self.after_commit = after_commit
        self.sent = self.failed = self.retrying = 0

    @property
    def busy(self) -> bool:
        return bool(self.in_flight)

    def enabled(self) -> bool:
        return not (self.after_commit and transaction.get_connection(Delivery.objects.db).in_atomic_block)

    def pump(self, now: datetime | None = None) -> int:
        """Record finished attempts and start due deliveries on idle
        threads; returns how many it started."""
        if not self.enabled():
            return 0
        self.collect()
        idle = self.pool.size - len(self.in_flight)
        if idle <= 0:
            return 0
        now = now or timezone.now()
        fold_storms(now)
        token = new_group()
        started = 0
        for delivery in claim(token, limit=idle, now=now):
            try:
                notifier = load(delivery.notifier, delivery.target)
                message = message_for(delivery)
            except (ImportError, NotifierError) as error:
                self._count(record_outcome(delivery, token, NotifierError(f"cannot send: {error}"), now))
                continue
            future = self.pool.submit(partial(_attempt, notifier, message))
            self.in_flight[future] = _InFlight(delivery, token, now)
            started += 1
        return started

    def collect(self) -> int:
        """Record the attempts that finished; returns how many."""
        finished = [future for future in self.in_flight if future.done()]
        for future in finished:
            job = self.in_flight.pop(future)
            self._count(record_outcome(job.delivery, job.token, future.exception(), job.now))
        return len(finished)

    def _count(self, status: str) -> None:
        if status == DeliveryStatus.SENT:
            self.sent += 1
        elif status == DeliveryStatus.FAILED:
            self.failed += 1
        else:
            self.retrying += 1

    def finish(self, timeout: float | None = None, *, now: Callable[[], datetime] = timezone.now) -> None:
        """Send what is due and wait for it: at most ``timeout`` seconds
        (default: one ``KONG_DELIVERY_TIMEOUT``, and half a second for the
        sockets to report it). A new attempt
        starts only while a whole timeout is left, so an attempt is abandoned
        only when it outlives its own timeout."""
        if not self.enabled():
            return
        per_attempt = kong_settings.DELIVERY_TIMEOUT
        budget = per_attempt + 0.5 if timeout is None else timeout
        deadline = time.monotonic() + budget
        while True:
            if deadline - time.monotonic() > per_attempt:
                self.pump(now())
            else:
                self.collect()
            if not self.in_flight:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                logger.warning(
                    "kong: %d alert(s) still sending; they stay pending for the next run", len(self.in_flight)
                )
                return
            wait(list(self.in_flight), timeout=min(left, 0.5), return_when=FIRST_COMPLETED)


def send_pending(*, now: datetime | None = None, threads: int = SENDER_THREADS) -> Sender:
    """Send every due delivery now and wait until none is due or in flight
    (retries that back off past ``now`` wait for a later call). Works inside
    a transaction too (tests, scripts). Returns the sender, with counts."""
    sender = Sender(threads, after_commit=False)
    moment = now or timezone.now()
    while True:
        sender.pump(moment)
        if not sender.in_flight:
            return sender
        wait(list(sender.in_flight), return_when=FIRST_COMPLETED)
        sender.collect()
