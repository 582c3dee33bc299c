"""Execute one validated twill script in isolation and return a plain Outcome.

This is the only module that imports twill. twill 3.3 keeps its browser,
options and namespaces in module globals, so a check must never share a
process with another running check: concurrency comes from ``kong.engine.pool``'s
worker processes, and every check starts by resetting twill's state. Output
is captured with a per-run handler on the ``twill`` logger; ``set_output``
is never called (it rebinds ``sys.stdout``).
"""

from __future__ import annotations

import io
import logging
import os
import re
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import twill
from twill import commands, namespaces, parse
from twill.browser import browser
from twill.errors import TwillAssertionError, TwillException

from kong.engine import transport
from kong.engine.scripts import URL_COMMANDS, Script, ScriptError, Step, check_url
from kong.masking import mask
from kong.status import Status

MAX_LOG_CHARS = 64_000
MAX_REASON_CHARS = 460  # TestResult.reason holds 500, with room for " at line N"

# twill attached a stdout handler when imported; Kong captures per run instead.
if twill.handler is not None:
    twill.log.removeHandler(twill.handler)
twill.log.propagate = False
twill.log.setLevel(logging.INFO)

# The pristine command namespace and command list; scripts may add to them
# with set_global or (unsafe mode) extend_with.
_PRISTINE_GLOBALS = dict(namespaces.global_dict)
_PRISTINE_COMMANDS = list(parse.command_list)

# twill's state is process-global: checks run one at a time per process. The
# pool gives each check its own process; this lock keeps threads that run
# checks inline (run-now from a threaded web server) from corrupting each other.
_LOCK = threading.RLock()


def _fresh_lock_after_fork() -> None:
    # A worker forked while another thread held the lock would wait forever.
    global _LOCK
    _LOCK = threading.RLock()


os.register_at_fork(after_in_child=_fresh_lock_after_fork)


class CheckTimeout(BaseException):
    """Raised by the soft wall-clock alarm; a BaseException so that twill's
    and httpx's ``except Exception`` blocks cannot swallow it."""


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to run one check, with no database access."""

    key: Any
    label: str
    script: Script
    timeout: float
    request_timeout: float
    safe: bool = True
    verify_tls: bool = True
    secrets: tuple[str, ...] = ()
    # The most decoded bytes read from one response; None reads
    # KONG_MAX_PAGE_BYTES when the check runs, 0 means no limit.
    max_page_bytes: int | None = None


@dataclass
class Outcome:
    """The plain result of running one script."""

    status: str
    duration_ms: float
    reason: str = ""
    failed_line: int | None = None
    log: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.status == Status.PASSED

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _ExitScript(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def execute(job: Job, *, app: Callable[..., Any] | None = None, soft_timeout: bool = True) -> Outcome:
    """Run ``job.script``'s steps; never raises for script or network trouble.

    ``app`` sends requests to a WSGI application in-process instead of the
    network. The soft alarm (``soft_timeout``) interrupts a step only in the
    main thread; elsewhere the deadline is checked between steps. Returns an
    Outcome with secrets masked; raises only KeyboardInterrupt.
    """
    with _LOCK:
        stdout, stderr = sys.stdout, sys.stderr
        handlers = list(twill.log.handlers)
        try:
            return _execute(job, app, soft_timeout)
        finally:
            # Unsafe scripts may redirect output (redirect_output), which
            # rebinds sys.stdout and adds a handler; undo both.
            sys.stdout, sys.stderr = stdout, stderr
            for handler in list(twill.log.handlers):
                if handler not in handlers:
                    twill.log.removeHandler(handler)


def _execute(job: Job, app: Callable[..., Any] | None, soft_timeout: bool) -> Outcome:
    capture = _Capture()
    twill.log.addHandler(capture)  # removed by execute()
    start = time.perf_counter()
    deadline = start + job.timeout if job.timeout > 0 and soft_timeout else None
    running: Step | None = None  # the step being executed, if any
    finished: Step | None = None  # the last step that completed
    outcome: Outcome
    try:
        with _alarm(job.timeout if soft_timeout else 0):
            _reset(job, app)
            for step in job.script.steps:
                if deadline is not None and time.perf_counter() > deadline:
                    raise CheckTimeout  # no alarm outside the main thread
                running = step
                twill.log.info(">> %d: %s", step.line, _display(step))
                transport.budget.requests = 0
                _run_step(step, job)
                if capture.circular_refresh:  # twill breaks the cycle, then carries on as if fine
                    raise TwillException(f"meta refresh loop: {browser.url} refreshes back to a page it came from")
                running, finished = None, step
            outcome = Outcome(Status.PASSED, 0)
    except CheckTimeout:
        outcome = Outcome(Status.TIMEOUT, 0, f"timed out after {_seconds(job.timeout)}")
    except (_ExitScript, SystemExit) as exit_:
        # twill's own exit (and Python's, from an unsafe ``run``) would end the
        # whole process; the script's exit code decides the check instead.
        outcome = _exit_outcome(exit_.code)
    except Exception as error:  # every failure becomes an outcome
        outcome = _classify(error, capture, job)
    outcome.duration_ms = round((time.perf_counter() - start) * 1000, 1)
    # Mask before cutting, so a cut never leaves half a secret behind.
    outcome.log = _truncate(_mask(capture.text(), job.secrets))
    reason = _mask(outcome.reason, job.secrets)
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 3] + "..."
    if outcome.status != Status.PASSED and running is not None:
        outcome.failed_line = running.line
        reason = f"{reason} at line {running.line}"
    elif outcome.status == Status.TIMEOUT and finished is not None:
        # The deadline passed between two steps: name the last line that ran,
        # never one that did not.
        outcome.failed_line = finished.line
        reason = f"{reason}, after line {finished.line}"
    outcome.reason = reason
    return outcome


def _exit_outcome(code: object) -> Outcome:
    if code is None or code == 0:
        twill.log.info("exit 0: script ended early")
        return Outcome(Status.PASSED, 0)
    return Outcome(Status.FAILED, 0, f"script exited with code {code}")


def _mask(text: str, secrets: tuple[str, ...]) -> str:
    return mask(text, list(secrets))


def page_limit(job: Job) -> int:
    """``job.max_page_bytes``, else ``KONG_MAX_PAGE_BYTES``; 0 means no limit."""
    if job.max_page_bytes is not None:
        return int(job.max_page_bytes)
    try:
        from kong.conf import kong_settings

        return kong_settings.MAX_PAGE_BYTES or 0
    except Exception:  # Django is not configured: the documented default
        return 10 * 1024 * 1024


def _reset(job: Job, app: Callable[..., Any] | None) -> None:
    """Give the check a fresh browser (cookies, headers, auth, history) and
    twill's pristine options, variables, commands and debug switches."""
    # twill hands ``verify`` to httpx, which takes an SSLContext (twill's hint says bool).
    browser.reset(app=app, timeout=job.request_timeout, verify=transport.tls_context(job.verify_tls))  # type: ignore[arg-type]
    transport.limit_pages(browser._client, page_limit(job))
    browser.debug_level = 0
    commands.options.clear()
    commands.options.update(commands.default_options)
    namespaces.global_dict.clear()
    namespaces.global_dict.update(_PRISTINE_GLOBALS)
    parse.command_list[:] = _PRISTINE_COMMANDS
    parse.log_commands(False)
    del namespaces._local_dict_stack[:]
    namespaces.new_local_dict()


def warm_up() -> None:
    """Run one throw-away check in-process, once per process, against an
    in-memory WSGI page: it builds the TLS contexts and fills the parser,
    regex and logging caches a check needs. The pool calls this before it
    forks, so every worker shares those pages instead of building its own.
    Never raises; touches no network, database or files."""
    global _warmed_up
    if _warmed_up:
        return
    _warmed_up = True
    transport.tls_context(True)
    transport.tls_context(False)
    steps = (
        Step(1, "go", ("http://kong.invalid/",)),
        Step(2, "code", ("200",)),
        Step(3, "find", ("Kong",)),
        Step(4, "title", ("Kong",)),
        Step(5, "follow", ("next",)),
    )
    job = Job(key=None, label="warm-up", script=Script(source="", steps=steps), timeout=0, request_timeout=5)
    try:
        execute(job, app=_warm_up_page, soft_timeout=False)
        browser.reset()
    except Exception:  # a failed warm-up only costs memory
        pass


_warmed_up = False


def _warm_up_page(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [
        b"<html><head><title>Kong</title></head><body><p>Kong</p>"
        b"<form method='post'><input name='q'><input type='submit'></form>"
        b"<a href='/'>next</a></body></html>"
    ]


def _run_step(step: Step, job: Job) -> None:
    globals_dict, locals_dict = namespaces.get_twill_glocals()
    args = parse.process_args(step.args, globals_dict, locals_dict)
    if job.safe:
        _check_expanded_urls(step, args)
    if step.command == "exit":
        raise _ExitScript(_exit_code(args))
    parse.execute_command(step.command, args, globals_dict, locals_dict, f"<{job.label}>:{step.line}")


def _check_expanded_urls(step: Step, args: list[str]) -> None:
    """A variable may expand to any URL: check the value, not the name."""
    index = URL_COMMANDS.get(step.command)
    if index is not None and len(args) > index:
        try:
            check_url(args[index], step.line, expanded=True)
        except ScriptError as error:
            raise TwillException(error.reason) from None


def _exit_code(args: list[str]) -> int:
    try:
        return int(args[0]) if args and args[0] else 0
    except ValueError:
        raise TwillException(f"exit code must be a number, not {args[0]!r}") from None


def _classify(error: Exception, capture: _Capture, job: Job) -> Outcome:
    if isinstance(error, (transport.PageTooLarge, transport.TooManyRequests)):
        return Outcome(Status.ERROR, 0, str(error))
    if isinstance(error, MemoryError):
        return Outcome(Status.ERROR, 0, _out_of_memory())
    if isinstance(error, TwillAssertionError):
        message = _one_line(str(error))
        message = re.sub(r"^code is (\d+) != (\d+)$", r"code \1 != \2", message)
        return Outcome(Status.FAILED, 0, message)
    if isinstance(error, httpx.TimeoutException):
        return Outcome(Status.TIMEOUT, 0, f"request timed out after {_seconds(browser.timeout or job.request_timeout)}")
    if isinstance(error, TwillException) and str(error).startswith("cannot go to") and capture.network_errors:
        return Outcome(Status.ERROR, 0, _network_reason(*capture.network_errors[-1]))
    if isinstance(error, httpx.HTTPError) and (reason := _http_reason(error)):
        return Outcome(Status.ERROR, 0, reason)
    if isinstance(error, re.error):  # a pattern that came from a variable
        return Outcome(Status.ERROR, 0, f"bad regular expression {error.pattern!r}: {error}")
    if type(error).__name__ == "ParserError" and "empty" in str(error).lower():  # lxml, on a page with no body
        return Outcome(Status.ERROR, 0, f"the page is empty ({transport.budget.last_url})")
    if isinstance(error, httpx.HTTPError):
        return Outcome(Status.ERROR, 0, f"{type(error).__name__}: {_one_line(str(error))}")
    if isinstance(error, TwillException):
        return Outcome(Status.ERROR, 0, _one_line(str(error)))
    return Outcome(Status.ERROR, 0, f"{type(error).__name__}: {_one_line(str(error))}")


def _out_of_memory() -> str:
    """Why a check hit a MemoryError, naming the worker's limit when there is one."""
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return "the check ran out of memory"
    return (
        f"the check ran out of memory: the worker process reached its {transport.size(limit, exact=False)} "
        "address-space limit (KONG_WORKER_MEMORY_LIMIT)"
    )


def _http_reason(error: httpx.HTTPError) -> str:
    """A sentence for the httpx errors a broken server causes; '' for others."""
    try:
        url = error.request.url
        where = f"{url.host}:{url.port}" if url.port else str(url.host)
    except RuntimeError:  # an error raised before there was a request
        url, where = None, "the server"
    message = _one_line(str(error))
    if isinstance(error, httpx.TooManyRedirects):
        return f"too many redirects (a redirect loop?) from {url}"
    if isinstance(error, httpx.RemoteProtocolError):
        if "without sending a response" in message:
            return f"{where} closed the connection without sending a response"
        if "incomplete" in message.lower() or "peer closed" in message.lower():
            return f"{where} closed the connection before the page ended ({message})"
        return f"{where} sent something that is not a valid HTTP response ({message})"
    if isinstance(error, httpx.ReadError):
        if "reset" in message.lower():
            return f"connection reset by {where} while reading the page"
        return f"reading the page from {where} failed: {message or type(error).__name__}"
    if isinstance(error, httpx.WriteError):
        return f"sending the request to {where} failed: {message or type(error).__name__}"
    return ""


def _tls_reason(message: str) -> str:
    """OpenSSL's message without its source location, and in words for the usual causes."""
    message = _one_line(re.sub(r"\s*\(_ssl\.c:\d+\)", "", message))
    if "CERTIFICATE_VERIFY_FAILED" in message:
        detail = message.split("certificate verify failed:", 1)[-1].strip()
        return f"its certificate is not trusted ({detail})"
    if "WRONG_VERSION_NUMBER" in message:
        return "the server did not answer in TLS (plain http on that port?)"
    if "UNEXPECTED_EOF" in message or "EOF occurred" in message:
        return "the server closed the connection during the TLS handshake"
    return message


def _network_reason(url: str, error: BaseException) -> str:
    target = httpx.URL(url) if "://" in url else None
    host = target.host if target else url
    port = target.port if target and target.port else None
    message = str(error)
    lowered = message.lower()
    if any(
        text in lowered
        for text in (
            "name or service not known",
            "nodename nor servname",
            "temporary failure in name resolution",
            "no address associated",
            "name resolution",
            "getaddrinfo",
        )
    ):
        return f"DNS lookup failed for {host}"
    if "connection refused" in lowered:
        return f"connection refused by {host}{f':{port}' if port else ''}"
    if "ssl" in lowered or "certificate" in lowered:
        return f"TLS error with {host}{f':{port}' if port else ''}: {_tls_reason(message)}"
    return f"cannot reach {host}: {_one_line(message) or type(error).__name__}"


class _Capture(logging.Handler):
    """Collects twill's log for one run, and remembers network errors that
    twill's ``go`` logs and then swallows."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.buffer = io.StringIO()
        self.network_errors: list[tuple[str, BaseException]] = []
        self.circular_refresh = False
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if record.msg == "Circular meta refresh detected!":
            self.circular_refresh = True
        if (
            isinstance(record.msg, str)
            and record.msg.startswith("cannot go to")
            and isinstance(args, tuple)
            and len(args) == 2
            and isinstance(args[1], BaseException)
        ):
            self.network_errors.append((str(args[0]), args[1]))
        try:
            self.buffer.write(self.format(record) + "\n")
        except Exception:  # a log line must never fail a check
            self.buffer.write(f"{record.msg}\n")

    def text(self) -> str:
        return self.buffer.getvalue()


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Raise CheckTimeout after ``seconds`` of wall-clock time (main thread only)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise CheckTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _display(step: Step) -> str:
    return " ".join([step.command, *(_quote(arg) for arg in step.args)])


def _quote(arg: str) -> str:
    return f'"{arg}"' if not arg or any(ch.isspace() for ch in arg) else arg


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _seconds(value: Any) -> str:
    """``"2 s"``; an httpx Timeout shows its read timeout."""
    value = getattr(value, "read", value)
    return f"{float(value or 0):g} s"


def _truncate(text: str) -> str:
    if len(text) <= MAX_LOG_CHARS:
        return text
    half = MAX_LOG_CHARS // 2
    return f"{text[:half]}\n... [{len(text) - MAX_LOG_CHARS} characters cut] ...\n{text[-half:]}"
