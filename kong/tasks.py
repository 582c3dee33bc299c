"""Optional Django Tasks entry point for scale-out.

``run_check_task.enqueue(check_id)`` runs one check on whatever worker host
the project's ``TASKS`` backend uses; the task records its own result. It
uses ``django.tasks`` (Django 6+) or the ``django-tasks`` backport when
installed; otherwise ``run_check_task`` is None and Kong runs checks in its
own process pool as usual.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from kong import services


def _task_decorator() -> Any:
    for module in ("django.tasks", "django_tasks"):
        try:
            return import_module(module).task
        except ImportError:
            continue
    return None


def run_check(check_id: int) -> dict[str, Any] | None:
    """Run and record one check; returns the plain CheckReport dict."""
    return services.run_check(check_id)


task = _task_decorator()
# The engine's Task object (typed by the engine, which Kong imports lazily).
run_check_task: Any = task()(run_check) if task is not None else None
