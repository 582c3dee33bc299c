"""JSON POST to each URL in KONG_WEBHOOKS on failure and recovery."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from django.core.checks import CheckMessage, Error

from kong.conf import kong_settings
from kong.notifiers import Event, Notifier, NotifierError


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
    }


class WebhookNotifier(Notifier):
    @classmethod
    def is_enabled(cls) -> bool:
        return len(kong_settings.WEBHOOKS) > 0

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
        body = json.dumps(payload(event)).encode()
        failures = []
        for url in kong_settings.WEBHOOKS:
            request = urllib.request.Request(
                url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=kong_settings.WEBHOOK_TIMEOUT) as response:
                    response.read()
            except (urllib.error.URLError, OSError) as error:
                failures.append(f"{url}: {error}")
        if failures:
            raise NotifierError("; ".join(failures), retry=True)
