"""Scale-out: claim checks and hand them to Django's Tasks framework, in
batches, one queue per location; and the body of the task a worker runs.

Kong has no queue of its own. The engine (``django.tasks`` on Django 6+,
the ``django-tasks`` backport on 5.2, with a backend such as
django-tasks-db) stores the tasks and its own workers run them
(``manage.py db_worker --queue-name kong``). Kong's claims keep the
reliability rules on this path too: a task runs only the checks whose claim
it still holds, renews those leases while it runs, and records each result
exactly once (``record_many`` by token). A worker that dies leaves its
checks claimed until the lease expires; the next ``--due`` run or scheduler
tick claims them again and enqueues them again.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from importlib import import_module
from types import ModuleType
from typing import Any

from django.apps import apps
from django.db import transaction
from django.utils import timezone

from kong.conf import kong_settings
from kong.models import Check, CheckQuerySet
from kong.services.claims import new_token, release_claims
from kong.services.planning import CHECK_RELATED, KongError
from kong.services.running import run_checks

logger = logging.getLogger("kong.services")

# Where the framework lives: built into Django 6+, else the backport.
FRAMEWORKS = ("django.tasks", "django_tasks")


def tasks_framework() -> ModuleType | None:
    """``django.tasks`` (Django 6+) or the ``django_tasks`` backport, or None
    when neither is installed. Imported only when asked for."""
    for name in FRAMEWORKS:
        try:
            return import_module(name)
        except ImportError:
            continue
    return None


def here(checks: CheckQuerySet, locations: list[str] | tuple[str, ...] = ()) -> CheckQuerySet:
    """The checks a local run (``--due`` in the pool, the scheduler) takes:
    those of the default location, or of ``locations`` when it names some
    (``check_sites --due --location eu`` on a host in eu). The checks of
    other locations are left for their queues."""
    return checks if locations else checks.filter(location__isnull=True)


@dataclass
class EnqueueReport:
    """What ``enqueue_checks`` handed to the engine: checks per queue, and tasks."""

    queues: dict[str, int] = field(default_factory=dict)
    tasks: int = 0

    @property
    def enqueued(self) -> int:
        return sum(self.queues.values())

    def as_json(self) -> dict[str, Any]:
        return {"enqueued": self.enqueued, "tasks": self.tasks, "queues": dict(sorted(self.queues.items()))}

    def render(self, format: str) -> str:
        """``check_sites`` output: one JSON object with ``json``, else one line."""
        return json.dumps(self.as_json()) if format == "json" else self.as_text()

    def as_text(self) -> str:
        if not self.queues:
            return "enqueued 0 checks: nothing to do"
        where = ", ".join(f"{count} to {queue}" for queue, count in sorted(self.queues.items()))
        return f"enqueued {self.enqueued} checks in {self.tasks} tasks: {where}"


def enqueue_checks(
    checks: CheckQuerySet,
    task: Any,
    *,
    due: bool,
    now: datetime | None = None,
    limit: int | None = None,
) -> EnqueueReport:
    """Claim ``checks`` (with ``due``, only the due ones, at most ``limit``;
    without, all of them that no run holds) and enqueue them as ``task``,
    ``KONG_TASK_BATCH`` check ids per task, each batch on its location's
    queue (``.using(queue_name=...)``, priority 0) with a claim token of its
    own, so a worker that dies holds only its own batch.

    The tasks are enqueued after the claim commits (``on_commit``): a claim
    that rolls back never becomes a task. A batch the engine refuses (an
    unknown queue, the broker away) has its claims released, so the checks
    are due again at once, and the call then raises KongError naming it.
    """
    if task is None:
        raise KongError(
            "enqueueing needs Django's Tasks framework: Django 6+, or pip install 'django-kong[tasks]' "
            "and configure TASKS (see the README, Scaling out)"
        )
    report = EnqueueReport()
    refused: list[str] = []
    size = max(1, kong_settings.TASK_BATCH)
    with transaction.atomic():
        token = new_token()
        if due:
            claimed = checks.claim_due(token, now=now, limit=limit)
        else:
            claimed = Check.objects.filter(pk__in=checks.claim(token, now=now))
        by_queue: dict[str, list[int]] = defaultdict(list)
        # Only ids and queue names: a task loads its own checks on the worker.
        for pk, queue in claimed.order_by("pk").values_list("pk", "location__queue_name"):
            by_queue[queue or kong_settings.DEFAULT_QUEUE].append(pk)
        for queue, pks in sorted(by_queue.items()):
            for start in range(0, len(pks), size):
                batch = pks[start : start + size]
                batch_token = new_token()
                Check.objects.filter(pk__in=batch, claim_token=token).update(claim_token=batch_token)
                transaction.on_commit(partial(_enqueue, task, queue, batch, batch_token, report, refused))
    if refused:
        raise KongError(f"could not enqueue {'; '.join(refused)}; their claims were released")
    return report


def _enqueue(task: Any, queue: str, pks: list[int], token: str, report: EnqueueReport, refused: list[str]) -> None:
    try:
        task.using(queue_name=queue).enqueue(pks, token)
    except Exception as error:  # the engine's own errors (InvalidTask, a broker away) have no common base
        release_claims(token, pks)
        refused.append(f"{len(pks)} checks to queue {queue!r} ({type(error).__name__}: {error})")
        return
    report.queues[queue] = report.queues.get(queue, 0) + len(pks)
    report.tasks += 1


def run_claimed(check_ids: list[int], token: str, *, worker: str = "", reuse_pool: bool = False) -> dict[str, Any]:
    """The body of Kong's task: run the checks among ``check_ids`` that
    ``token`` still holds, in this host's pool of ``KONG_WORKERS`` under the
    three timeout layers, renewing their leases while they run, and record
    them (deliveries included) as a local run does; ``worker`` names this
    worker in each result. A check whose claim was taken over (the lease
    expired while the task waited or its first worker died) is skipped.
    Returns plain data: how many ran, were recorded and were skipped, and
    the statuses."""
    now = timezone.now()
    held = list(
        Check.objects.filter(pk__in=check_ids, claim_token=token)
        .select_related(*CHECK_RELATED)
        .order_by("pk")
    )
    if len(held) < len(check_ids):
        logger.info("kong task: %d of %d checks are no longer ours to run", len(check_ids) - len(held), len(check_ids))
    report = run_checks(held, token=token, worker=worker, reuse_pool=reuse_pool) if held else None
    results = report.results if report else []
    return {
        "ran": len(held),
        "recorded": len(results),
        "skipped": len(check_ids) - len(held),
        "statuses": dict(Counter(item.status for item in results)),
        "worker": worker,
        "started": now.isoformat(),
    }


# A Kong task RUNNING for longer than this (or than KONG_CLAIM_LEASE, if
# longer) lost its worker: a batch of KONG_TASK_BATCH checks ends long before.
STALE_TASK_SECONDS = 3600


def stale_tasks(now: datetime | None = None) -> Any:
    """Kong's django-tasks-db rows left RUNNING by a worker that died
    (``db_worker`` has no reaper: a SIGKILLed worker's task stays RUNNING for
    ever), as a queryset; None when django_tasks_db is not installed."""
    if not apps.is_installed("django_tasks_db"):
        return None
    from django_tasks_db.models import DBTaskResult

    now = now or timezone.now()
    cutoff = now - timedelta(seconds=max(kong_settings.CLAIM_LEASE, STALE_TASK_SECONDS))
    return DBTaskResult.objects.filter(status="RUNNING", task_path__startswith="kong.tasks.", started_at__lt=cutoff)


def fail_stale_tasks(now: datetime | None = None) -> int:
    """Mark ``stale_tasks`` failed; returns how many. Their checks lost
    nothing: the leases expired and a later run claimed them again. This
    only keeps the engine's table honest."""
    stale = stale_tasks(now)
    if stale is None:
        return 0
    return int(
        stale.update(
            status="FAILED",
            finished_at=now or timezone.now(),
            exception_class_path="kong.services.dispatch.WorkerLost",
            traceback="kong_prune: the worker running this task died; its checks were claimed again after the lease.",
        )
    )
