from __future__ import annotations

import django
import pytest

from kong import services, tasks
from kong.models import Check, TestResult
from tests.factories import make_site, make_test


@pytest.mark.skipif(django.VERSION < (6, 0), reason="django.tasks arrived in Django 6.0")
@pytest.mark.django_db
def test_run_check_task_records_a_result_through_the_task_backend(web):
    site = make_site(servername=web.host)
    make_test(body="go {{ site.url }}\ncode 200", sites=[site])
    services.sync_checks()
    check = Check.objects.get()

    task_result = tasks.run_check_task.enqueue(check.pk)

    assert task_result.return_value["status"] == "passed"
    assert TestResult.objects.get().pk == task_result.return_value["result_id"]


@pytest.mark.skipif(django.VERSION >= (6, 0), reason="Django 6 has django.tasks")
def test_without_a_tasks_framework_there_is_no_task():
    assert tasks.run_check_task is None
