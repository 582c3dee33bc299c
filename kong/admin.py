"""Kong's admin, built for fleets of dozens to thousands of sites.

Changelists never run a query per row: counts come from subqueries and
related rows from ``list_select_related`` or one prefetch. Secret site
variables never reach the page in clear. Results are read-only; checks only
take a mute.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import Truncator

from kong.forms import SiteAdminForm, TestAdminForm, masked_variables_text
from kong.models import Check, Delivery, Location, Server, Site, Test, TestResult, Type
from kong.status import is_failing

MUTE_FOR = timedelta(hours=1)


def short_time(moment: datetime | None, pattern: str = "%Y-%m-%d %H:%M") -> str:
    """``2026-11-25 08:44`` in the current time zone: narrow enough for wide lists."""
    return timezone.localtime(moment).strftime(pattern) if moment else "-"


def count_of(rows: QuerySet[Any], column: str) -> Coalesce:
    """An annotation counting ``rows`` whose ``column`` is the outer row's pk.

    A correlated subquery, unlike ``Count()`` over joins, stays cheap when a
    changelist counts several relations at once.
    """
    counted = rows.filter(**{column: OuterRef("pk")}).order_by().values(column).annotate(n=Count("*")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def failing_checks(column: str) -> Coalesce:
    """An annotation counting the failing checks of each row (a site or a test)."""
    return count_of(Check.objects.failing(), column)


@admin.register(Server)
class ServerAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "hostname", "internal_ip", "external_ip", "is_active", "site_count")
    list_filter = ("is_active",)
    search_fields = ("name", "slug", "hostname", "internal_ip", "external_ip")
    prepopulated_fields = {"slug": ("name",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Server]:
        return super().get_queryset(request).annotate(site_total=count_of(Site.servers.through.objects.all(), "server"))

    @admin.display(description="sites", ordering="site_total")
    def site_count(self, server: Any) -> int:
        return int(server.site_total)


@admin.register(Location)
class LocationAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "queue_name", "is_active", "site_count")
    list_filter = ("is_active",)
    search_fields = ("name", "slug", "queue_name")
    prepopulated_fields = {"slug": ("name",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Location]:
        return super().get_queryset(request).annotate(
            site_total=count_of(Site.locations.through.objects.all(), "location")
        )

    @admin.display(description="sites", ordering="site_total")
    def site_count(self, location: Any) -> int:
        return int(location.site_total)


class SiteInline(admin.TabularInline):
    model = Site
    fields = ("name", "slug", "servername", "is_live")
    prepopulated_fields = {"slug": ("name",)}
    show_change_link = True
    extra = 0


@admin.register(Type)
class TypeAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "site_count", "description")
    search_fields = ("name", "slug", "description")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [SiteInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Type]:
        return super().get_queryset(request).annotate(site_total=count_of(Site.objects.all(), "type"))

    @admin.display(description="sites", ordering="site_total")
    def site_count(self, type_: Any) -> int:
        return int(type_.site_total)


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    form = SiteAdminForm
    list_display = ("name", "type", "site_link", "server_list", "is_live", "failing", "variables_masked")
    list_filter = ("type", "servers", "locations", "is_live")
    list_select_related = ("type",)
    # Not `variables`: searching by value would let anyone probe for a secret.
    search_fields = ("name", "slug", "servername", "type__name", "settings_module")
    prepopulated_fields = {"slug": ("name",)}
    filter_horizontal = ("servers", "locations")
    actions = ["make_live", "make_not_live"]
    fieldsets = (
        (None, {"fields": ("name", "slug", "type", "servername", "servers", "locations", "is_live")}),
        ("Script variables", {"fields": ("variables",)}),
        ("Deployment", {"fields": ("settings_module", "python_path"), "classes": ("collapse",)}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Site]:
        return super().get_queryset(request).prefetch_related("servers").annotate(failing_total=failing_checks("site"))

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or self.has_change_permission(request, obj):
            return fieldsets
        # View-only users get every field read-only, shown straight from the
        # row; swap in the masked rendering so they never see secrets.
        return [
            (name, {**options, "fields": tuple("variables_masked" if f == "variables" else f for f in options["fields"])})
            for name, options in fieldsets
        ]

    @admin.display(description="URL", ordering="servername")
    def site_link(self, site: Site) -> str:
        """A link only for a well-formed http(s) URL: a stored ``javascript:``
        servername (from before validation, or a raw update) stays text."""
        if not site.has_web_url:
            return site.servername
        return format_html('<a href="{}" rel="noopener noreferrer">{}</a>', site.url, site.servername)

    @admin.display(description="servers")
    def server_list(self, site: Site) -> str:
        return ", ".join(server.name for server in site.servers.all())

    @admin.display(description="failing checks", ordering="failing_total")
    def failing(self, site: Any) -> int:
        return int(site.failing_total)

    @admin.display(description="variables")
    def variables_masked(self, site: Site) -> str:
        # Masked before it is cut, so a cut never leaves part of a secret.
        return Truncator(masked_variables_text(site)).chars(48)

    @admin.action(description="Mark selected sites live (checked)")
    def make_live(self, request: HttpRequest, queryset: QuerySet[Site]) -> None:
        count = queryset.update(is_live=True)
        self.message_user(request, f"{count} site(s) are live and will be checked.", messages.SUCCESS)

    @admin.action(description="Mark selected sites not live (not checked)")
    def make_not_live(self, request: HttpRequest, queryset: QuerySet[Site]) -> None:
        count = queryset.update(is_live=False)
        self.message_user(request, f"{count} site(s) are no longer live and will not be checked.", messages.SUCCESS)


@admin.register(Test)
class TestAdmin(admin.ModelAdmin):
    __test__ = False  # not a pytest class

    form = TestAdminForm
    save_as = True
    list_display = ("name", "slug", "schedule", "is_active", "per_server", "type_count", "site_count", "failing")
    list_filter = ("is_active", "per_server", "types")
    search_fields = ("name", "slug", "body")
    prepopulated_fields = {"slug": ("name",)}
    filter_horizontal = ("sites", "types")
    actions = ["activate", "deactivate"]
    fieldsets = (
        (None, {"fields": ("name", "slug", "body")}),
        ("Where it runs", {"fields": ("types", "sites", "per_server")}),
        ("When", {"fields": ("schedule", "timeout", "is_active")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Test]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                type_total=count_of(Test.types.through.objects.all(), "test"),
                site_total=count_of(Test.sites.through.objects.all(), "test"),
                failing_total=failing_checks("test"),
            )
        )

    @admin.display(description="types", ordering="type_total")
    def type_count(self, test: Any) -> int:
        return int(test.type_total)

    @admin.display(description="own sites", ordering="site_total")
    def site_count(self, test: Any) -> int:
        return int(test.site_total)

    @admin.display(description="failing checks", ordering="failing_total")
    def failing(self, test: Any) -> int:
        return int(test.failing_total)

    @admin.action(description="Activate selected tests")
    def activate(self, request: HttpRequest, queryset: QuerySet[Test]) -> None:
        count = queryset.update(is_active=True)
        self.message_user(request, f"{count} test(s) activated.", messages.SUCCESS)

    @admin.action(description="Deactivate selected tests")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[Test]) -> None:
        count = queryset.update(is_active=False)
        self.message_user(request, f"{count} test(s) deactivated.", messages.SUCCESS)


class DeliveryInline(admin.TabularInline):
    """A result's alerts, one row per notifier, on its admin page."""

    model = Delivery
    fk_name = "result"
    fields = ("kind", "notifier_name", "status", "attempts", "sent_at", "next_attempt_at", "error", "summary")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="notifier")
    def notifier_name(self, delivery: Delivery) -> str:
        return delivery.notifier_label


@admin.register(TestResult)
class TestResultAdmin(admin.ModelAdmin):
    """Results are a record of what happened: viewable and deletable, never edited."""

    list_display = ("when", "site", "test", "server", "status", "duration_ms", "short_reason")
    list_filter = ("status", "test", "site__type")
    list_select_related = ("test", "site", "server")
    search_fields = ("site__name", "site__slug", "test__name", "test__slug", "reason")
    date_hierarchy = "run_date"
    raw_id_fields = ("test", "site", "server", "location")
    # COUNT(*) over millions of results on every page is not worth it.
    show_full_result_count = False
    fields = (
        "test", "site", "server", "location", "worker", "run_date", "status", "succeeded", "duration",
        "failed_line", "reason", "script", "content",
    )  # fmt: skip
    inlines = [DeliveryInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[TestResult]:
        # The changelist never shows the (large) log and script.
        queryset = super().get_queryset(request)
        if request.resolver_match and request.resolver_match.url_name == "kong_testresult_changelist":
            queryset = queryset.defer("content", "script")
        return queryset

    @admin.display(description="run date", ordering="run_date")
    def when(self, result: TestResult) -> str:
        return short_time(result.run_date, "%Y-%m-%d %H:%M:%S")

    @admin.display(description="duration", ordering="duration")
    def duration_ms(self, result: TestResult) -> str:
        return f"{result.duration:.0f} ms"

    @admin.display(description="reason")
    def short_reason(self, result: TestResult) -> str:
        return Truncator(result.reason).chars(100)


class MutedFilter(admin.SimpleListFilter):
    title = "muted"
    parameter_name = "muted"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Muted now"), ("no", "Not muted")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        if self.value() == "yes":
            return queryset.filter(muted_until__gt=now)
        if self.value() == "no":
            return queryset.exclude(muted_until__gt=now)
        return queryset


@admin.register(Check)
class CheckAdmin(admin.ModelAdmin):
    """The live state of each (test, site[, server]) pair.

    Rows are created and updated by check_sites; people only mute them.
    """

    list_display = (
        "site", "test", "server", "status", "since", "failures_in_a_row", "next_due", "muted", "last_reason",
    )  # fmt: skip
    list_filter = ("status", MutedFilter, "test", "site__type", "location")
    list_select_related = ("test", "site", "server", "location", "last_result")
    search_fields = ("site__name", "site__slug", "test__name", "test__slug", "server__slug")
    actions = ["mute_for_an_hour", "unmute"]
    fields = (
        "test", "site", "server", "location", "status", "status_since", "consecutive_failures", "last_result",
        "last_run_at", "next_due_at", "claimed_until", "muted_until", "alerted_at",
    )  # fmt: skip
    readonly_fields = tuple(name for name in fields if name != "muted_until")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Check]:
        return super().get_queryset(request).defer("last_result__content", "last_result__script")

    def save_model(self, request: HttpRequest, obj: Check, form: Any, change: bool) -> None:
        """Write only what people edit: a run may be updating the same row's
        state (status, streak, claim) at this moment, and must not be undone."""
        editable = [name for name in self.fields or () if name not in self.readonly_fields]
        obj.save(update_fields=editable)

    @admin.display(description="since", ordering="status_since")
    def since(self, check: Check) -> str:
        return short_time(check.status_since)

    @admin.display(description="in a row", ordering="consecutive_failures")
    def failures_in_a_row(self, check: Check) -> int:
        return check.consecutive_failures

    @admin.display(description="next due", ordering="next_due_at")
    def next_due(self, check: Check) -> str:
        return short_time(check.next_due_at)

    @admin.display(description="muted until", ordering="muted_until")
    def muted(self, check: Check) -> str:
        return short_time(check.muted_until) if check.is_muted() else ""

    @admin.display(description="last reason")
    def last_reason(self, check: Check) -> str:
        if not is_failing(check.status) or check.last_result is None:
            return ""
        return Truncator(check.last_result.reason).chars(100)

    @admin.action(description="Mute selected checks for 1 hour (no alerts)")
    def mute_for_an_hour(self, request: HttpRequest, queryset: QuerySet[Check]) -> None:
        until = timezone.now() + MUTE_FOR
        count = queryset.update(muted_until=until)
        local = timezone.localtime(until).strftime("%H:%M")
        self.message_user(request, f"{count} check(s) muted until {local}.", messages.SUCCESS)

    @admin.action(description="Unmute selected checks")
    def unmute(self, request: HttpRequest, queryset: QuerySet[Check]) -> None:
        count = queryset.update(muted_until=None)
        self.message_user(request, f"{count} check(s) unmuted.", messages.SUCCESS)


# -- alerts: the delivery outbox ------------------------------------------------


class DeliveryStatusFilter(admin.SimpleListFilter):
    """Pending split in two: waiting its turn, or retrying after an error."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("pending", "Pending"), ("retrying", "Pending, retrying"), ("sent", "Sent"), ("failed", "Failed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "retrying":
            return queryset.filter(status="pending", attempts__gt=0)
        if self.value():
            return queryset.filter(status=self.value())
        return queryset


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    """The outbox: every alert per notifier, how it went and why not. Read-only."""

    list_display = ("created", "kind", "site_check", "notifier_name", "status", "attempts", "sent", "short_error")
    list_filter = (DeliveryStatusFilter, "kind", "notifier", "site_check__test", "site_check__site__type")
    list_select_related = ("site_check__test", "site_check__site", "site_check__server")
    search_fields = ("site_check__site__name", "site_check__site__slug", "site_check__test__slug", "error")
    date_hierarchy = "created_at"
    raw_id_fields = ("site_check", "result", "summary")
    show_full_result_count = False
    fields = (
        "kind", "site_check", "result", "notifier", "target_host", "status", "attempts", "error",
        "created_at", "next_attempt_at", "sent_at", "claimed_until", "group", "summary",
    )  # fmt: skip
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="created", ordering="created_at")
    def created(self, delivery: Delivery) -> str:
        return short_time(delivery.created_at, "%Y-%m-%d %H:%M:%S")

    @admin.display(description="notifier", ordering="notifier")
    def notifier_name(self, delivery: Delivery) -> str:
        return delivery.notifier_label

    @admin.display(description="target")
    def target_host(self, delivery: Delivery) -> str:
        # The host only: a webhook's path is often its secret.
        return delivery.notifier_label

    @admin.display(description="sent", ordering="sent_at")
    def sent(self, delivery: Delivery) -> str:
        return short_time(delivery.sent_at, "%Y-%m-%d %H:%M:%S")

    @admin.display(description="error")
    def short_error(self, delivery: Delivery) -> str:
        return Truncator(delivery.error).chars(100)
