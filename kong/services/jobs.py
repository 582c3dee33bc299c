"""Turn a Check into what a worker runs: render and validate its script
into a runner ``Job``, with the masked source a result keeps."""

from __future__ import annotations

from collections.abc import Iterable

from kong.conf import kong_settings
from kong.models import Check
from kong.runner import Job, Outcome
from kong.scripts import ScriptError, compile_script, context_for, mask, render


def build_job(check: Check, *, timeout: float | None = None) -> Job:
    """Render and validate ``check``'s script. Raises ScriptError."""
    script = compile_script(check.test, check.site, check.server)
    return Job(
        key=check.pk,
        label=check.label,
        script=script,
        timeout=float(timeout or check.test.effective_timeout),
        request_timeout=float(kong_settings.REQUEST_TIMEOUT),
        safe=bool(kong_settings.SAFE_MODE),
        verify_tls=bool(kong_settings.VERIFY_TLS),
        secrets=tuple(check.site.secret_values()),
    )


def masked_source(check: Check) -> str:
    """The rendered script with secrets masked, or '' when it cannot render."""
    try:
        text = render(check.test.body, context_for(check.site, check.test, check.server))
    except ScriptError:
        return check.test.body
    return mask(text, check.site.secret_values())


def invalid_outcome(error: ScriptError) -> Outcome:
    return Outcome("error", 0, f"invalid script: {error}", failed_line=error.line)


def dry_run(checks: Iterable[Check]) -> list[tuple[Check, ScriptError | None]]:
    """Render and validate each check's script without running it."""
    problems: list[tuple[Check, ScriptError | None]] = []
    for check in checks:
        try:
            build_job(check)
        except ScriptError as error:
            problems.append((check, error))
        else:
            problems.append((check, None))
    return problems
