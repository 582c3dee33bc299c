"""A JSON POST to each URL in KONG_WEBHOOKS on failure and recovery.

Each URL is a target of its own (one Delivery row per URL), so a URL that
is down is retried without posting to the others twice. The payload carries
a ``text`` field next to the structured ones, which Slack and Mattermost
incoming webhooks show as the message.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from django.core.checks import CheckMessage, Error

from kong.conf import kong_settings
from kong.notifiers import Event, Notifier, NotifierError, Summary


def payload(event: Event) -> dict[str, Any]:
    result = event.result
    return {
        "event": event.kind,
        "site": result.site.slug,
        "test": result.test.slug,
        "server": result.server.slug if result.server_id else None,  # type: ignore[union-attr]
        "status": result.status,
        "reason": result.reason,
        "failed_line": result.failed_line,
        "run_date": result.run_date.isoformat(),
        "duration_ms": result.duration,
        "consecutive_failures": event.check.consecutive_failures,
        "url": result.absolute_url(),
        "text": event.text,
    }


def summary_payload(summary: Summary) -> dict[str, Any]:
    return {
        "event": "summary",
        "alert": summary.alert,
        "test": summary.test.slug,
        "type": summary.site_type.slug if summary.site_type else None,
        "sites": summary.sites,
        "of": max(summary.total, summary.sites),
        "results": [
            {
                "site": event.result.site.slug,
                "server": event.result.server.slug if event.result.server_id else None,  # type: ignore[union-attr]
                "status": event.result.status,
                "reason": event.result.reason,
                "url": event.result.absolute_url(),
            }
            for event in summary.events
        ],
        "text": summary.text,
    }


def request_timeout() -> float:
    """Seconds per POST: ``KONG_DELIVERY_TIMEOUT``, or the deprecated
    ``KONG_WEBHOOK_TIMEOUT`` when that is smaller."""
    return float(min(kong_settings.DELIVERY_TIMEOUT, kong_settings.WEBHOOK_TIMEOUT))


class WebhookNotifier(Notifier):
    @classmethod
    def is_enabled(cls) -> bool:
        return len(kong_settings.WEBHOOKS) > 0

    @classmethod
    def targets(cls) -> list[str]:
        return list(kong_settings.WEBHOOKS)

    @classmethod
    def run_checks(cls) -> list[CheckMessage]:
        """kong.E002: ``KONG_WEBHOOKS`` must be a list of http(s) URLs."""
        hooks = kong_settings.WEBHOOKS
        if isinstance(hooks, (list, tuple)) and all(
            isinstance(url, str) and url.startswith(("http://", "https://")) for url in hooks
        ):
            return []
        return [
            Error(
                "KONG_WEBHOOKS must be a list of http(s) URLs.",
                hint='For example KONG_WEBHOOKS = ["https://hooks.example.com/kong"].',
                id="kong.E002",
            )
        ]

    def send(self, event: Event) -> None:
        self._post(payload(event))

    def send_summary(self, summary: Summary) -> None:
        self._post(summary_payload(summary))

    def _post(self, data: dict[str, Any]) -> None:
        """POST to this notifier's URL (every URL when it has none).
        A 4xx answer (but 408 and 429) is permanent; anything else retryable.
        Errors name the host only: a hook's path is often its secret."""
        body = json.dumps(data).encode()
        failures: list[str] = []
        retry = False
        for url in [self.target] if self.target else kong_settings.WEBHOOKS:
            request = urllib.request.Request(
                url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            host = urlsplit(url).netloc
            try:
                with urllib.request.urlopen(request, timeout=request_timeout()) as response:
                    response.read()
            except urllib.error.HTTPError as error:
                failures.append(f"{host}: HTTP {error.code} {error.reason}")
                retry = retry or error.code >= 500 or error.code in (408, 429)
            except (urllib.error.URLError, OSError) as error:
                failures.append(f"{host}: {getattr(error, 'reason', None) or error}")
                retry = True
        if failures:
            raise NotifierError("; ".join(failures), retry=retry)
