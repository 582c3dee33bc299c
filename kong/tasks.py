"""Kong's Django Tasks entry points, for scale-out.

``run_checks_task`` takes a list of check ids and the claim token they were
enqueued with (both JSON-safe). On the worker host it runs those checks
that the token still holds, in the host's own pool of ``KONG_WORKERS``
processes under the three timeout layers, renews their leases while it
runs, and records the results and alert deliveries exactly as a local run
does (``kong.services.dispatch.run_claimed``). ``check_sites --enqueue``
and ``KONG_EXECUTOR = "tasks"`` enqueue it; the engine's own workers run it
(``manage.py db_worker --queue-name kong``). Kong adds no worker command.

``run_check_task`` runs one check (``services.run_check``).

Both use ``django.tasks`` (Django 6+) or the ``django-tasks`` backport;
without either they are None and Kong runs checks in its own pool. They are
declared on the engine's default queue, ``"default"``, and enqueued on
``KONG_DEFAULT_QUEUE`` or a location's queue with ``.using(queue_name=...)``;
the engine validates a task's queue against the backend's ``QUEUES`` when
this module is imported and at each ``.using()``, so list every queue Kong
uses there, ``"default"`` included (or leave ``QUEUES`` empty).
"""

from __future__ import annotations

from typing import Any

from kong import services
from kong.services import dispatch

# Each function has its Task's name: a worker finds the task by its dotted
# path (``kong.tasks.run_checks_task``), which must lead to the Task object.


def run_checks_task(context: Any, check_ids: list[int], token: str) -> dict[str, Any]:
    """Run and record the checks ``token`` still holds among ``check_ids``;
    returns plain data (``dispatch.run_claimed``)."""
    return dispatch.run_claimed(
        [int(pk) for pk in check_ids], str(token), worker=worker_id(context), reuse_pool=in_a_worker(context)
    )


def run_check_task(check_id: int) -> dict[str, Any] | None:
    """Run and record one check; returns the plain CheckReport dict."""
    return services.run_check(check_id)


def worker_id(context: Any) -> str:
    """The engine's id for the worker running this task ('' when it has
    none: the result then says ``host:pid``)."""
    worker_ids = getattr(getattr(context, "task_result", None), "worker_ids", None) or []
    return str(worker_ids[-1]) if worker_ids else ""


def in_a_worker(context: Any) -> bool:
    """Whether this task runs in a worker process of the engine's (db_worker,
    rqworker), which runs task after task and so keeps one pool of check
    processes for all of them; not with the Immediate backend, which runs a
    task inside whoever enqueued it."""
    framework = dispatch.tasks_framework()
    alias = getattr(getattr(context, "task_result", None), "backend", None)
    if framework is None or not alias:
        return False
    try:
        backend = framework.task_backends[alias]
    except Exception:  # an unknown alias: run as a one-off
        return False
    return type(backend).__name__ not in ("ImmediateBackend", "DummyBackend")


def _declare() -> tuple[Any, Any]:
    """The engine's Task objects, or (None, None) without an engine."""
    framework = dispatch.tasks_framework()
    if framework is None:
        return None, None
    # Declared on the engine's default queue ("default"), which a backend
    # with no TASKS setting accepts; enqueued with .using(queue_name=...).
    return framework.task(takes_context=True)(run_checks_task), framework.task()(run_check_task)


# Typed by the engine, which Kong imports lazily; None without one.
run_checks_task, run_check_task = _declare()  # type: ignore[assignment]  # noqa: F811
