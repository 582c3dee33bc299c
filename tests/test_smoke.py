from __future__ import annotations

import pytest
from django.core.management import call_command

from kong.models import TestResult
from tests.factories import make_site, make_test


@pytest.mark.django_db
def test_check_sites_records_a_passing_result(web, capsys):
    site = make_site(servername=web.host)
    make_test(body='go {{ site.url }}\ncode 200\nfind "Latest News"', sites=[site])
    call_command("check_sites", "--workers", "1")
    result = TestResult.objects.get()
    assert result.status == "passed", result.content
    assert "1 check: 1 passed, 0 failed" in capsys.readouterr().out
