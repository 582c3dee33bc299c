"""Kong's inventory (Server, Type, Site, Test), results and per-check state.

Domain decisions live here: which sites a test applies to, what a state row
does with a new outcome, and which alert (if any) that outcome deserves.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from kong.conf import kong_settings
from kong.schedule import DEFAULT_SCHEDULE, next_run, validate_schedule_field
from kong.status import FAILING, OK, CheckStatus, Status, is_muted

__all__ = ["CheckStatus", "Status"]  # re-exported: their home is kong.status


_Named = TypeVar("_Named", bound="Named")


class SlugManager(models.Manager[_Named]):
    def get_by_natural_key(self, slug: str) -> _Named:
        return self.get(slug=slug)


class Named(models.Model):
    """Name, unique slug (the natural key) and ordering shared by the inventory."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)

    class Meta:
        abstract = True
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def natural_key(self) -> tuple[str]:
        return (self.slug,)


class Server(Named):
    hostname = models.CharField(max_length=255, blank=True)
    internal_ip = models.GenericIPAddressField(null=True, blank=True)
    external_ip = models.GenericIPAddressField(null=True, blank=True)
    is_active = models.BooleanField(default=True)

    objects = SlugManager["Server"]()


class Type(Named):
    description = models.TextField(blank=True)

    objects = SlugManager["Type"]()


class Location(Named):
    """Where checks run from: a site with locations is checked once from
    each of them, by the task workers that serve ``queue_name``. A site
    with none is checked from the default location (the local pool, or the
    queue ``KONG_DEFAULT_QUEUE``)."""

    queue_name = models.CharField(
        max_length=100,
        blank=True,
        help_text="The task queue its checks go to; its workers run db_worker --queue-name with it. "
        "Empty: kong-<slug>.",
    )
    is_active = models.BooleanField(default=True, help_text="Inactive locations check nothing.")

    objects = SlugManager["Location"]()

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.queue_name:
            self.queue_name = default_queue_name(self.slug)
        super().save(*args, **kwargs)


def default_queue_name(slug: str) -> str:
    """The queue of a location that names none: ``kong-<slug>``."""
    return f"kong-{slug}"


_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?")


def servername_problem(servername: str) -> str | None:
    """Why ``servername`` is not a host (``www.example.com``, ``10.0.0.5:8080``)
    or an http(s) URL, or None when it is."""
    value = servername.strip()
    if not value or value != servername or any(character.isspace() for character in value):
        return "Enter a host name such as www.example.com, or an http(s) URL, with no spaces."
    url = value if "://" in value else f"http://{value}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"{servername!r} is neither a host[:port] nor an http(s) URL."
    if parts.scheme.lower() not in ("http", "https"):
        return f"Only http and https URLs can be checked, not {parts.scheme}:."
    host = parts.hostname or ""
    if parts.username is not None or parts.password is not None:
        return "Put credentials in the site's variables, not in its servername."
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST.fullmatch(host):
            return f"{host or servername!r} is not a host name."
    if port == 0:
        return "A port must be between 1 and 65535."
    return None


class Site(Named):
    type = models.ForeignKey(
        Type, null=True, blank=True, on_delete=models.SET_NULL, related_name="sites"
    )
    servername = models.CharField(
        max_length=255, help_text="Host name (www.example.com) or full URL."
    )
    servers = models.ManyToManyField(Server, blank=True, related_name="sites")
    locations = models.ManyToManyField(
        Location,
        blank=True,
        related_name="sites",
        help_text="Checked once from each; none: from the default location.",
    )
    settings_module = models.CharField(max_length=255, blank=True)
    python_path = models.CharField(max_length=255, blank=True)
    is_live = models.BooleanField(default=True, help_text="Only live sites are checked.")
    variables = models.JSONField(
        default=dict,
        blank=True,
        help_text=(
            "Extra template context as a JSON object, e.g. {\"section\": \"news\"}. "
            "Variables named like API, TOKEN, KEY, SECRET, PASS or SIGNATURE are "
            "secret: their values are masked in logs, results, mails and pages."
        ),
    )

    objects = SlugManager["Site"]()

    @property
    def url(self) -> str:
        """``servername`` with ``http://`` added when it has no scheme."""
        if "://" in self.servername:
            return self.servername
        return f"http://{self.servername}"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or self.servername

    @property
    def has_web_url(self) -> bool:
        """Whether ``url`` is a well-formed http(s) URL, safe to show as a link."""
        return servername_problem(self.servername) is None

    def clean(self) -> None:
        """Refuse a servername that is not an http(s) host or URL (the admin
        calls this); ``javascript:…`` and friends never become links."""
        super().clean()
        problem = servername_problem(self.servername)
        if problem:
            raise ValidationError({"servername": problem})

    def secret_values(self) -> list[str]:
        """Values of variables whose names look secret, longest first.

        In nested variables (``{"login": {"password": ...}}``) a value is
        secret when any name on its path looks secret; a secret list or
        object is secret all through, so ``{{ login.password }}`` is masked too.
        """
        pattern = re.compile(kong_settings.SECRET_VARIABLES, re.IGNORECASE)
        values: set[str] = set()

        def walk(value: Any, secret: bool) -> None:
            if isinstance(value, dict):
                for name, item in value.items():
                    walk(item, secret or bool(pattern.search(str(name))))
            elif isinstance(value, (list, tuple)):
                for item in value:
                    walk(item, secret)
            elif secret and value not in (None, ""):
                values.add(str(value))

        walk(self.variables or {}, False)
        return sorted(values, key=len, reverse=True)


class TestQuerySet(models.QuerySet["Test"]):
    def active(self) -> TestQuerySet:
        return self.filter(is_active=True)

    def applicable_pairs(self) -> set[tuple[int, int]]:
        """``(test_id, site_id)`` for each of these tests and each site it
        applies to: its own sites plus every site of its types, live sites
        only. The one statement of that rule; four queries for any number
        of tests."""
        live = Site.objects.filter(is_live=True)
        pairs = set(Test.sites.through.objects.filter(test__in=self, site__in=live).values_list("test_id", "site_id"))
        type_sites: dict[int, list[int]] = {}
        for site_id, type_id in live.filter(type__isnull=False).values_list("pk", "type_id"):
            type_sites.setdefault(type_id, []).append(site_id)
        for test_id, type_id in Test.types.through.objects.filter(test__in=self).values_list("test_id", "type_id"):
            pairs.update((test_id, site_id) for site_id in type_sites.get(type_id, ()))
        return pairs


TestManager = SlugManager.from_queryset(TestQuerySet)


class Test(Named):
    __test__ = False  # not a pytest class

    body = models.TextField(
        help_text="A twill script, rendered as a Django template for each site."
    )
    sites = models.ManyToManyField(Site, blank=True, related_name="tests")
    types = models.ManyToManyField(Type, blank=True, related_name="tests")
    schedule = models.CharField(
        max_length=100,
        default=DEFAULT_SCHEDULE,
        validators=[validate_schedule_field],
        help_text=(
            "Five-field cron expression (minute hour day month weekday), e.g. */10 * * * *, "
            "in KONG_TIME_ZONE (default: TIME_ZONE)."
        ),
    )
    is_active = models.BooleanField(default=True)
    timeout = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Wall-clock seconds per check. Empty: KONG_CHECK_TIMEOUT.",
    )
    per_server = models.BooleanField(
        default=False,
        help_text="Run once through each of the site's active servers ({{ server }} in the body).",
    )

    objects = TestManager()

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Save; raises ValidationError for a schedule that is not a 5-field
        cron expression that fires. When the schedule changed, this test's
        checks that have run move their next run to the new schedule (checks
        that never ran stay due at once)."""
        try:
            validate_schedule_field(self.schedule)
        except ValidationError as error:
            raise ValidationError({"schedule": error.messages}) from error
        previous = None
        if self.pk is not None:
            previous = Test.objects.filter(pk=self.pk).values_list("schedule", flat=True).first()
        super().save(*args, **kwargs)
        if previous is not None and previous != self.schedule:
            Check.objects.filter(test=self, next_due_at__isnull=False).update(
                next_due_at=next_run(self.schedule, timezone.now())
            )

    @property
    def effective_timeout(self) -> int:
        return int(self.timeout or kong_settings.CHECK_TIMEOUT)

    def applicable_sites(self) -> models.QuerySet[Site]:
        """Its own sites plus every site of its types; live sites only."""
        pairs = Test.objects.filter(pk=self.pk).applicable_pairs()
        sites: models.QuerySet[Site] = Site.objects.filter(pk__in=[site_id for _, site_id in pairs])
        return sites


class TestResultQuerySet(models.QuerySet["TestResult"]):
    def failures(self) -> TestResultQuerySet:
        """Results that did not pass, through index ``kong_result_failed``.

        ``succeeded__in=[False]``, not ``succeeded=False``: Django writes the
        latter as ``NOT succeeded``, which SQLite cannot match to the index.
        """
        return self.filter(succeeded__in=[False])


class TestResult(models.Model):
    __test__ = False  # not a pytest class

    test = models.ForeignKey(Test, on_delete=models.CASCADE, related_name="results")
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="results")
    server = models.ForeignKey(
        Server, null=True, blank=True, on_delete=models.SET_NULL, related_name="results"
    )
    run_date = models.DateTimeField(default=timezone.now, db_index=True)
    duration = models.FloatField(default=0, help_text="Milliseconds.")
    succeeded = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PASSED)
    reason = models.CharField(max_length=500, blank=True)
    content = models.TextField(blank=True, help_text="Captured twill log plus the reason.")
    script = models.TextField(blank=True, help_text="The rendered script, secrets masked.")
    failed_line = models.PositiveIntegerField(null=True, blank=True)
    location = models.ForeignKey(
        Location, null=True, blank=True, on_delete=models.SET_NULL, related_name="results"
    )
    worker = models.CharField(
        max_length=200, blank=True, help_text="Where it ran: the task worker's id, or host:pid."
    )

    objects = TestResultQuerySet.as_manager()

    class Meta:
        ordering = ["-run_date", "-id"]
        indexes = [
            models.Index(fields=["site", "test", "-run_date"], name="kong_result_history"),
            models.Index(fields=["test", "-run_date"], name="kong_result_test"),
            models.Index(fields=["succeeded", "-run_date"], name="kong_result_failed"),
        ]

    def __str__(self) -> str:
        return f"{self.test} on {self.site}: {self.status}"

    def get_absolute_url(self) -> str:
        return reverse("kong:result_detail", args=[self.pk])

    def absolute_url(self) -> str:
        """A link for mails: ``KONG_BASE_URL`` + the result page, or ''."""
        try:
            path = self.get_absolute_url()
        except NoReverseMatch:
            return ""
        return f"{kong_settings.BASE_URL.rstrip('/')}{path}"


class Alert(models.TextChoices):
    FAILURE = "failure", "failure"
    RECOVERY = "recovery", "recovery"
    SUMMARY = "summary", "summary"  # one message for a storm of failures or recoveries


@dataclass(frozen=True)
class Transition:
    """What recording one outcome did to a check's state."""

    previous_status: str
    alert: str | None  # an ``Alert`` value, or None


# Claims are written in chunks of this many ids (SQLite's limit on one
# statement's parameters was 999 before 3.32).
CLAIM_CHUNK = 500


def _lease() -> timedelta:
    return timedelta(seconds=kong_settings.CLAIM_LEASE)


class CheckQuerySet(models.QuerySet["Check"]):
    def active(self) -> CheckQuerySet:
        """Checks the inventory still implies (see ``Check.is_active``)."""
        return self.filter(is_active=True)

    def failing(self) -> CheckQuerySet:
        return self.active().filter(status__in=FAILING)

    def due(self, now: datetime | None = None) -> CheckQuerySet:
        """Active checks whose slot has come and that nobody holds a live claim on."""
        now = now or timezone.now()
        return self.active().filter(
            Q(next_due_at__isnull=True) | Q(next_due_at__lte=now),
            Q(claimed_until__isnull=True) | Q(claimed_until__lt=now),
        )

    # -- claims: a lease and a token, so no check runs twice for one slot --------

    def claim_due(self, token: str, *, now: datetime | None = None, limit: int | None = None) -> CheckQuerySet:
        """Atomically claim the due checks among these (at most ``limit``,
        most overdue first) with ``token`` and return exactly those: never a
        check the token already held before this call, so a long-lived
        claimer never starts a check that is still in flight.

        A filtered UPDATE sets a lease and the token, and repeats the due and
        unclaimed conditions, so a concurrent run's UPDATE (PostgreSQL
        re-checks them on rows another transaction just claimed; SQLite runs
        writers one at a time) skips rows already claimed: no check runs
        twice for one slot. A dead run's claims expire after
        ``KONG_CLAIM_LEASE`` seconds; a live one renews its own (``renew``).
        """
        now = now or timezone.now()
        due = self.due(now).order_by(F("next_due_at").asc(nulls_first=True), "pk").values_list("pk", flat=True)
        # A list, as some databases refuse LIMIT in IN (...).
        candidates = list(due if limit is None else due[: max(0, limit)])
        claimed: list[int] = []
        for start in range(0, len(candidates), CLAIM_CHUNK):  # keep IN (...) under every database's limit
            chunk = candidates[start : start + CLAIM_CHUNK]
            if Check.objects.filter(pk__in=chunk).due(now).update(claimed_until=now + _lease(), claim_token=token):
                claimed += chunk
        return self.filter(pk__in=claimed, claim_token=token) if claimed else self.none()

    def claim(self, token: str, *, now: datetime | None = None) -> list[int]:
        """Claim these checks whether due or not (run-now), skipping any
        that another run holds a live claim on; returns the pks claimed."""
        now = now or timezone.now()
        self.filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)).update(
            claimed_until=now + _lease(), claim_token=token
        )
        return list(self.filter(claim_token=token).values_list("pk", flat=True))

    def renew(self, tokens: list[str], *, now: datetime | None = None) -> int:
        """Extend the lease of every check still claimed with one of ``tokens``."""
        if not tokens:
            return 0
        return self.filter(claim_token__in=tokens).update(claimed_until=(now or timezone.now()) + _lease())

    def release(self, token: str) -> int:
        """Give up ``token``'s claims among these, recording nothing."""
        return self.filter(claim_token=token).update(claimed_until=None, claim_token="")


class Check(models.Model):
    """The state of one (test, site[, server][, location]) check.

    Keeps scheduling, the dashboard and alert decisions O(pairs), not
    O(history).
    """

    test = models.ForeignKey(Test, on_delete=models.CASCADE, related_name="checks")
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="checks")
    server = models.ForeignKey(
        Server, null=True, blank=True, on_delete=models.CASCADE, related_name="checks"
    )
    # None: the default location (the local pool, or KONG_DEFAULT_QUEUE).
    location = models.ForeignKey(
        Location, null=True, blank=True, on_delete=models.CASCADE, related_name="checks"
    )
    status = models.CharField(
        max_length=10, choices=CheckStatus.choices, default=CheckStatus.PENDING
    )
    status_since = models.DateTimeField(default=timezone.now)
    last_result = models.ForeignKey(
        TestResult, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_run_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    next_due_at = models.DateTimeField(null=True, blank=True, db_index=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=64, blank=True)
    muted_until = models.DateTimeField(null=True, blank=True)
    # False while the inventory no longer implies this pair (the test was
    # deactivated, the site stopped being live). The row is kept, with its
    # mute and failure streak, so turning the pair back on does not alert anew.
    is_active = models.BooleanField(default=True)
    # When the failure in progress was alerted (its deliveries written); None
    # while nothing was. A recovery is alerted only after a failure was, and a
    # failure that began under a mute is alerted when the mute ends.
    alerted_at = models.DateTimeField(null=True, blank=True)

    objects = CheckQuerySet.as_manager()

    class Meta:
        ordering = ["site__name", "test__name"]
        permissions = [("run_check", "Can run a check now from the dashboard")]
        # The key is (test, site, server, location); server and location may
        # be null, and NULLs are distinct in a plain unique constraint, so
        # one conditional constraint per combination (works on every database).
        constraints = [
            models.UniqueConstraint(
                fields=["test", "site"],
                condition=Q(server__isnull=True, location__isnull=True),
                name="kong_check_unique_pair",
            ),
            models.UniqueConstraint(
                fields=["test", "site", "server"],
                condition=Q(server__isnull=False, location__isnull=True),
                name="kong_check_unique_server",
            ),
            models.UniqueConstraint(
                fields=["test", "site", "location"],
                condition=Q(server__isnull=True, location__isnull=False),
                name="kong_check_unique_location",
            ),
            models.UniqueConstraint(
                fields=["test", "site", "server", "location"],
                condition=Q(server__isnull=False, location__isnull=False),
                name="kong_check_unique_server_location",
            ),
        ]

    def __str__(self) -> str:
        via = f" via {self.server}" if self.server_id else ""
        where = f" from {self.location}" if self.location_id else ""
        return f"{self.test} on {self.site}{via}{where}"

    @property
    def label(self) -> str:
        """``site/test`` (``site/test@server``, ``site/test [location]``), as printed by check_sites."""
        label = f"{self.site.slug}/{self.test.slug}"
        if self.server_id:
            label += f"@{self.server.slug}"  # type: ignore[union-attr]
        if self.location_id:
            label += f" [{self.location.slug}]"  # type: ignore[union-attr]
        return label

    @property
    def is_failing(self) -> bool:
        return self.status not in OK

    def is_muted(self, now: datetime | None = None) -> bool:
        return is_muted(self.muted_until, now)

    def is_due(self, now: datetime | None = None) -> bool:
        """The Python twin of ``CheckQuerySet.due`` for one (maybe unsaved) row."""
        now = now or timezone.now()
        return (
            self.is_active
            and (self.next_due_at is None or self.next_due_at <= now)
            and (self.claimed_until is None or self.claimed_until < now)
        )

    def apply_result(self, result: TestResult) -> Transition:
        """Fold a new result into this state row and decide the alert.

        Keeps django-kong's semantics: alert on the first failure (or on the
        Nth in a row with KONG_MAIL_ON_CONSECUTIVE_FAILURES = N), again on
        every failure with KONG_MAIL_ON_EVERY_FAILURE, and on recovery with
        KONG_MAIL_ON_RECOVERY when a failure had been alerted (``alerted_at``,
        set with a failure alert, cleared by a pass). A muted check alerts
        nothing; its failure is alerted when the mute ends. Does not save.
        """
        previous = self.status
        threshold = max(1, kong_settings.MAIL_ON_CONSECUTIVE_FAILURES)
        alert: str | None = None
        if result.succeeded:
            if self.alerted_at is not None and kong_settings.MAIL_ON_RECOVERY:
                alert = Alert.RECOVERY
            self.consecutive_failures = 0
            self.alerted_at = None
        else:
            self.consecutive_failures += 1
            if self.consecutive_failures == threshold or (
                self.consecutive_failures > threshold and kong_settings.MAIL_ON_EVERY_FAILURE
            ):
                alert = Alert.FAILURE
        if result.status != previous:
            self.status_since = result.run_date
        self.status = result.status
        self.last_result = result
        self.last_run_at = result.run_date
        if alert and self.is_muted(result.run_date):
            alert = None  # alerted when the mute ends, if still failing (outbox.alert_ended_mutes)
        if alert == Alert.FAILURE:
            self.alerted_at = result.run_date
        return Transition(previous_status=previous, alert=alert)


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "pending"
    SENT = "sent", "sent"
    FAILED = "failed", "failed"


class Delivery(models.Model):
    """One alert for one notifier: the outbox row written in the same
    transaction as the result that causes it, and sent after the commit
    (``kong.notifiers.outbox``).

    ``notifier`` is the notifier's dotted path, as listed in
    ``KONG_NOTIFIERS``; ``target`` is the notifier's own address for it
    (a webhook's URL; '' for mail). A ``summary`` row stands for the
    ``members`` it folded (one per check of a storm); a member follows its
    summary's status and is never sent on its own. ``group`` is the run (or
    the scheduler) whose storms may fold it.
    """

    # The contract's ``check``: a field cannot be named so (it would hide
    # Model.check(), Django's system checks: models.E020), so the column is.
    site_check = models.ForeignKey(Check, on_delete=models.CASCADE, related_name="deliveries", db_column="check_id")
    result = models.ForeignKey(
        TestResult, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries"
    )
    kind = models.CharField(max_length=10, choices=Alert.choices)
    notifier = models.CharField(max_length=200)
    target = models.CharField(max_length=500, blank=True)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    # Not sent before this: a retry's backoff, or a storm still gathering.
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_until = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=64, blank=True)
    group = models.CharField(max_length=64, blank=True)
    summary = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="members"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="kong_delivery_due")]

    def __str__(self) -> str:
        return f"{self.kind} to {self.notifier_label} for check {self.site_check_id}: {self.status}"

    @property
    def notifier_label(self) -> str:
        """A short name for people: the class name, and a webhook's host
        (never its path, which often holds the hook's secret)."""
        name = self.notifier.rpartition(".")[2]
        host = urlsplit(self.target).hostname if self.target else None
        return f"{name} ({host})" if host else name


class DailyRollup(models.Model):
    """Per-check daily aggregate kept after raw results are pruned."""

    test = models.ForeignKey(Test, on_delete=models.CASCADE, related_name="rollups")
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="rollups")
    server = models.ForeignKey(
        Server, null=True, blank=True, on_delete=models.CASCADE, related_name="rollups"
    )
    day = models.DateField()
    runs = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    mean_duration = models.FloatField(default=0)
    p95_duration = models.FloatField(default=0)
    max_duration = models.FloatField(default=0)

    class Meta:
        ordering = ["-day"]
        indexes = [
            models.Index(fields=["site", "test", "-day"], name="kong_rollup_history"),
            # Folding and pruning ask "which days are rolled up?" across all checks.
            models.Index(fields=["day"], name="kong_rollup_day"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["test", "site", "day"],
                condition=Q(server__isnull=True),
                name="kong_rollup_unique_day",
            ),
            models.UniqueConstraint(
                fields=["test", "site", "server", "day"],
                condition=Q(server__isnull=False),
                name="kong_rollup_unique_server_day",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.test} on {self.site}, {self.day}"


# The permission the dashboard's run-now button needs.
RUN_PERMISSION = "kong.run_check"
# The permission every Kong page needs (unless KONG_PUBLIC_DASHBOARD).
VIEW_PERMISSION = "kong.view_testresult"
