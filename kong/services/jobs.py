"""Turn a Check into what a worker runs: render and validate its script
into a runner ``Job``, with the masked source a result keeps."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from kong.conf import kong_settings
from kong.engine.runner import Job, Outcome
from kong.engine.scripts import Script, ScriptError, context_for, render, validate
from kong.masking import mask
from kong.models import Check
from kong.status import Status


def build_job(check: Check, *, timeout: float | None = None) -> Job:
    """Render and validate ``check``'s script. Raises ScriptError."""
    script = compile_check(check)
    return Job(
        key=check.pk,
        label=check.label,
        script=script,
        timeout=float(timeout or check.test.effective_timeout),
        request_timeout=kong_settings.REQUEST_TIMEOUT,
        safe=kong_settings.SAFE_MODE,
        verify_tls=kong_settings.VERIFY_TLS,
        max_page_bytes=kong_settings.MAX_PAGE_BYTES,
        secrets=tuple(check.site.secret_values()),
    )


def compile_check(check: Check) -> Script:
    """``check``'s test body rendered for its site (and server) and validated,
    as ``scripts.compile_script`` does, with the validation cached per
    distinct rendered text. Raises ScriptError with the site's secrets masked
    (its message quotes the rendered line, which may hold one).

    A body with no template syntax renders to itself and is not rendered; any
    other body is rendered for every check, since a template may say
    ``{% now %}`` or ``|random``.
    """
    test, site = check.test, check.site
    try:
        text = render(test.body, context_for(site, test, check.server)) if _has_tags(test.body) else test.body
    except ScriptError as error:
        raise error.masked(site.secret_values()) from None
    script = _validated(text, kong_settings.SAFE_MODE)
    if isinstance(script, ScriptError):
        raise script.masked(site.secret_values())
    return script


# How many distinct rendered scripts keep their validation. A fleet renders
# one text for many checks (2,000 sites behind one URL: one text), and twill's
# grammar costs tens of microseconds a line; a Script is immutable, so one is
# shared by every check whose text it is.
SCRIPT_CACHE_SIZE = 4096


@lru_cache(maxsize=SCRIPT_CACHE_SIZE)
def _validated(text: str, safe: bool) -> Script | ScriptError:
    """The Script for ``text``, or the (unmasked) error that refuses it."""
    try:
        return validate(text, safe=safe)
    except ScriptError as error:
        return error


def _has_tags(body: str) -> bool:
    """Whether ``body`` holds template syntax; without it, it renders to itself."""
    return "{{" in body or "{%" in body or "{#" in body


def masked_source(check: Check) -> str:
    """The rendered script with secrets masked, or '' when it cannot render."""
    try:
        text = render(check.test.body, context_for(check.site, check.test, check.server))
    except ScriptError:
        return check.test.body
    return mask(text, check.site.secret_values())


def invalid_outcome(error: ScriptError) -> Outcome:
    return Outcome(Status.ERROR, 0, f"invalid script: {error}", failed_line=error.line)


@dataclass(frozen=True)
class Prepared:
    """A check made ready to run: its ``job``, or, when its script does not
    render or validate, the ``invalid`` outcome to record at once instead;
    ``source`` is the rendered script with secrets masked, as results keep it."""

    check: Check
    job: Job | None
    source: str
    invalid: Outcome | None = None


def prepare(check: Check, *, timeout: float | None = None) -> Prepared:
    """Build ``check``'s job; never raises for a bad script (see ``Prepared``)."""
    try:
        job = build_job(check, timeout=timeout)
    except ScriptError as error:
        return Prepared(check, None, "", invalid_outcome(error))
    return Prepared(check, job, mask(job.script.source, list(job.secrets)))


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
