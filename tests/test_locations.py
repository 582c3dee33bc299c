"""Locations: a site is checked once from each of its locations, a site with
none from the default location; the Check key is (test, site, server,
location), and results say where they ran."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, transaction

from kong import services
from kong.models import Check, Location, TestResult
from tests.factories import make_server, make_site, make_test


def make_location(slug: str, **fields: object) -> Location:
    fields.setdefault("name", slug.upper())
    return Location.objects.create(slug=slug, **fields)


@pytest.mark.django_db
def test_a_locations_queue_defaults_to_kong_and_its_slug():
    assert make_location("eu").queue_name == "kong-eu"
    assert make_location("us", queue_name="probes-us").queue_name == "probes-us"
    assert Location.objects.get_by_natural_key("eu").slug == "eu"


@pytest.mark.django_db
def test_a_site_is_checked_once_from_each_active_location_and_from_the_default_without_any():
    eu, us, old = make_location("eu"), make_location("us"), make_location("old", is_active=False)
    everywhere = make_site("everywhere")
    everywhere.locations.set([eu, us, old])
    home = make_site("home")
    retired = make_site("retired")
    retired.locations.set([old])  # its only location is off: checked from nowhere
    make_test(sites=[everywhere, home, retired])

    services.sync_checks()

    wheres = sorted(
        (site, location or "-")
        for site, location in Check.objects.active().values_list("site__slug", "location__slug")
    )
    assert wheres == [("everywhere", "eu"), ("everywhere", "us"), ("home", "-")]


@pytest.mark.django_db
def test_locations_multiply_with_servers_for_per_server_tests():
    eu = make_location("eu")
    site = make_site("ljworld", servers=[make_server("web1"), make_server("web2")])
    site.locations.set([eu])
    make_test(sites=[site], per_server=True)
    services.sync_checks()
    assert sorted(Check.objects.values_list("server__slug", "location__slug")) == [("web1", "eu"), ("web2", "eu")]


@pytest.mark.django_db
def test_removing_a_location_retires_its_checks_and_the_default_one_comes_back():
    eu = make_location("eu")
    site = make_site()
    make_test(sites=[site])
    services.sync_checks()
    site.locations.set([eu])
    services.sync_checks()
    assert list(Check.objects.active().values_list("location__slug", flat=True)) == ["eu"]
    site.locations.clear()
    services.sync_checks()
    assert list(Check.objects.active().values_list("location__slug", flat=True)) == [None]
    assert Check.objects.count() == 2  # rows are kept, with their mutes and streaks


@pytest.mark.django_db
def test_the_check_key_includes_the_location():
    eu = make_location("eu")
    site = make_site()
    test = make_test(sites=[site])
    Check.objects.create(test=test, site=site)
    Check.objects.create(test=test, site=site, location=eu)
    with pytest.raises(IntegrityError), transaction.atomic():
        Check.objects.create(test=test, site=site, location=eu)
    with pytest.raises(IntegrityError), transaction.atomic():
        Check.objects.create(test=test, site=site)


@pytest.mark.django_db
def test_check_sites_location_selects_by_location_and_json_names_it(web, capsys):
    eu = make_location("eu")
    abroad = make_site("abroad", web.host)
    abroad.locations.set([eu])
    make_test(sites=[abroad, make_site("home", web.host)])

    call_command("check_sites", "--location", "eu", "--format", "json", "--workers", "0")  # exit 0: returns
    data = json.loads(capsys.readouterr().out)
    assert [(item["site"], item["location"]) for item in data["results"]] == [("abroad", "eu")]
    result = TestResult.objects.get()
    assert result.location == eu
    assert ":" in result.worker  # host:pid for a local run

    call_command("check_sites", "--format", "json", "--workers", "0")
    data = json.loads(capsys.readouterr().out)
    assert sorted((item["site"], item["location"]) for item in data["results"]) == [
        ("abroad", "eu"),
        ("home", None),
    ]


@pytest.mark.django_db
def test_an_unknown_location_is_a_usage_error():
    make_test(sites=[make_site()])
    with pytest.raises(CommandError, match="unknown location 'mars'"):
        call_command("check_sites", "--location", "mars", "--list")
