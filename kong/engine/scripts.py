"""Render a test body for one site, then validate the rendered twill script.

Rendering uses a private template ``Engine`` with no loaders and no
libraries, autoescape off. Validation parses each line with twill's own
grammar (``kong.engine.grammar``) and, in
safe mode, refuses anything that could run Python, touch files or leave
http(s).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.template import Context, Engine, Library, TemplateSyntaxError
from django.template.base import Parser, Token

from kong.conf import kong_settings
from kong.engine import grammar
from kong.masking import mask

if TYPE_CHECKING:
    from kong.models import Server, Site, Test


# What a safe script may do: browse, fill forms, assert, and set variables.
SAFE_COMMANDS = frozenset(
    {
        "go", "reload", "back", "follow",
        "code", "find", "not_find", "notfind", "url", "title",
        "form_value", "formvalue", "fv", "form_clear", "formclear",
        "form_action", "formaction", "fa", "submit",
        "add_auth", "add_extra_header", "clear_extra_headers", "show_extra_headers",
        "agent", "clear_cookies", "show_cookies", "showcookies",
        "echo", "exit", "sleep", "timeout", "info", "tidy_ok",
        "show", "show_html", "showhtml", "show_forms", "showforms",
        "show_links", "showlinks", "show_history", "showhistory",
        "set_global", "setglobal", "set_local", "setlocal",
    }
)  # fmt: skip

# Why each dangerous twill command is refused in safe mode.
REFUSED_COMMANDS = {
    "run": "executes Python code",
    "extend_with": "imports a Python module",
    "run_file": "runs script files from disk",
    "runfile": "runs script files from disk",
    "rf": "runs script files from disk",
    "add_cleanup": "runs script files from disk",
    "save_html": "writes files",
    "save_cookies": "writes files",
    "load_cookies": "unpickles a file from disk",
    "form_file": "reads files from disk",
    "formfile": "reads files from disk",
    "redirect_output": "writes files",
    "redirect_error": "writes files",
    "reset_output": "changes process output",
    "reset_error": "changes process output",
    "config": "changes global twill configuration",
    "debug": "changes global debugging state",
    "get_input": "reads from the terminal",
    "getinput": "reads from the terminal",
    "get_password": "reads from the terminal",
    "getpassword": "reads from the terminal",
}

URL_COMMANDS = {"go": 0, "form_action": 1, "formaction": 1, "fa": 1}
# Commands whose first argument twill compiles as a regular expression.
PATTERN_COMMANDS = frozenset({"find", "not_find", "notfind", "title", "url", "follow"})
VARIABLE_SETTERS = {"set_global", "setglobal", "set_local", "setlocal"}

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_PLAIN_DOLLAR = re.compile(rf"\$(?:{_IDENTIFIER}|\{{{_IDENTIFIER}\}})")
# "javascript:..." has a scheme; "localhost:8000" is a host and a port.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
# host:port[/path]: a port is 1 to 65535, and ends the authority.
_HOST_PORT = re.compile(r"^([A-Za-z0-9.-]+):([0-9]{1,5})(?:[/?#]|$)")
# Names that are URL schemes, never a host: "file:80/etc/passwd" is a file URL.
_KNOWN_SCHEMES = frozenset(
    {
        "about", "blob", "chrome", "data", "dict", "file", "filesystem", "ftp", "ftps", "git", "gopher",
        "imap", "irc", "jar", "javascript", "ldap", "ldaps", "mailto", "news", "nfs", "nntp", "pop",
        "resource", "rsync", "sftp", "smb", "smtp", "snews", "ssh", "svn", "tel", "telnet", "tftp",
        "vbscript", "view-source", "wais", "ws", "wss",
    }
)  # fmt: skip

# Template tags a test body may not use, and why.
REFUSED_TAGS = {
    "debug": "it would print every variable, secrets included",
    "load": "test bodies may use Django's built-in tags and filters only",
    "include": "test bodies cannot read other templates",
    "extends": "test bodies cannot read other templates",
}


def _refusing(name: str) -> Any:
    def refuse(parser: Parser, token: Token) -> Any:
        raise TemplateSyntaxError(f"the {{% {name} %}} tag is not allowed: {REFUSED_TAGS[name]}")

    return refuse


def _make_engine() -> Engine:
    """A private engine: no loaders, no libraries, autoescape off, and the
    refused tags replaced by ones that fail with a clear reason."""
    engine = Engine(loaders=[], libraries={}, autoescape=False, debug=False)
    refusals = Library()
    for name in REFUSED_TAGS:
        refusals.tag(name, _refusing(name))
    # Later builtins override earlier ones when a template is parsed.
    engine.template_builtins = [*engine.template_builtins, refusals]
    return engine


_engine = _make_engine()


class ScriptError(ValueError):
    """A test body that cannot be rendered or is not a valid (safe) script."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line else reason)

    def masked(self, secrets: Iterable[str]) -> ScriptError:
        """The same error with ``secrets`` masked in its reason."""
        return ScriptError(mask(self.reason, secrets), self.line)


@dataclass(frozen=True)
class Step:
    """One validated twill command: what the runner executes, exactly."""

    line: int
    command: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class Script:
    """A rendered, validated script: plain, picklable data."""

    source: str
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class TypeValues:
    """A site's type as a test body sees it; ``{{ site.type }}`` is its name."""

    name: str
    slug: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class SiteValues:
    """The site a body is rendered for: plain values, no relations to follow."""

    name: str
    slug: str
    url: str
    servername: str
    host: str
    type: TypeValues | None

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class ServerValues:
    """The server a check goes through; ``{{ server }}`` is its name."""

    name: str
    slug: str
    hostname: str
    internal_ip: str | None
    external_ip: str | None

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class TestValues:
    """The test being rendered; ``{{ test }}`` is its name."""

    __test__ = False  # not a pytest class

    name: str
    slug: str

    def __str__(self) -> str:
        return self.name


def context_for(site: Site, test: Test | None = None, server: Server | None = None) -> dict[str, Any]:
    """The template context: each of ``site``'s own variables, then ``site``,
    ``test`` and ``server`` as plain values (see the README's table).

    Never a model instance: a template may call any method without arguments
    and follow any relation, so ``site.type.sites.all`` would reach every
    other site's variables, secrets included.
    """
    context: dict[str, Any] = dict(site.variables) if isinstance(site.variables, dict) else {}
    type_ = site.type if site.type_id is not None else None
    context.update(
        site=SiteValues(
            name=site.name,
            slug=site.slug,
            url=site.url,
            servername=site.servername,
            host=_host(site),
            type=TypeValues(name=type_.name, slug=type_.slug) if type_ is not None else None,
        ),
        test=TestValues(name=test.name, slug=test.slug) if test is not None else None,
        server=(
            ServerValues(
                name=server.name,
                slug=server.slug,
                hostname=server.hostname,
                internal_ip=server.internal_ip,
                external_ip=server.external_ip,
            )
            if server is not None
            else None
        ),
    )
    return context


def _host(site: Site) -> str:
    try:
        return site.host
    except ValueError:  # a servername urlsplit cannot read ("http://[bad")
        return site.servername


def render(body: str, context: dict[str, Any]) -> str:
    """Render ``body`` as a Django template. Raises ScriptError."""
    try:
        template = _engine.from_string(body)
        return template.render(Context(context, autoescape=False))
    except TemplateSyntaxError as error:
        raise ScriptError(f"template error: {error}") from error
    except Exception as error:  # a broken filter or attribute in the template
        raise ScriptError(f"template error: {type(error).__name__}: {error}") from error


def validate(text: str, *, safe: bool | None = None) -> Script:
    """Parse ``text`` into steps; raises ScriptError naming the line.

    Unparsable lines (an unterminated quote, say) are errors, never skipped.
    In safe mode only ``SAFE_COMMANDS`` are allowed, arguments may hold plain
    variable references only, and URLs must be http(s).
    """
    safe = kong_settings.SAFE_MODE if safe is None else safe
    steps: list[Step] = []
    extended = False  # after extend_with (unsafe mode), new commands may exist
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            parsed = grammar.parse_line(line)
        except ValueError as error:
            raise ScriptError(f"cannot parse {line!r}: {error}", number) from error
        if parsed is None:
            continue
        command, args = parsed
        if command not in grammar.COMMANDS and not extended:
            raise ScriptError(f"unknown twill command {command!r}", number)
        if safe:
            _check_safe(command, args, number)
        wrong = grammar.arity_error(command, args) or _argument_error(command, args)
        if wrong:  # "go {{ site.url }" would otherwise fail only when run
            raise ScriptError(wrong, number)
        extended = extended or command == "extend_with"
        steps.append(Step(line=number, command=command, args=tuple(args)))
    if not steps:
        raise ScriptError("the script has no commands")
    return Script(source=text, steps=tuple(steps))


def _argument_error(command: str, args: list[str]) -> str | None:
    """Why an argument twill would choke on at run time is wrong, or None.
    Arguments that hold a variable are checked when they expand, by twill."""
    if not args or "$" in args[0] or args[0].startswith("__"):
        return None
    if command in PATTERN_COMMANDS:
        try:
            re.compile(args[0])
        except re.error as error:
            return f"bad regular expression {args[0]!r}: {error}"
    if command == "code" and not args[0].strip().isdigit():
        return f"code takes an HTTP status number, not {args[0]!r}"
    return None


def _check_safe(command: str, args: list[str], number: int) -> None:
    if command in REFUSED_COMMANDS:
        raise ScriptError(
            f"{command!r} {REFUSED_COMMANDS[command]} and is not allowed in safe mode", number
        )
    if command not in SAFE_COMMANDS:
        raise ScriptError(f"{command!r} is not allowed in safe mode", number)
    for arg in args:
        _check_safe_arg(arg, number)
    if command in URL_COMMANDS and len(args) > URL_COMMANDS[command]:
        check_url(args[URL_COMMANDS[command]], number)
    if command in VARIABLE_SETTERS and args:
        # A variable must not shadow a command (go, code) or twill's own
        # dunder names (__builtins__, __url__).
        name = args[0]
        if not re.fullmatch(_IDENTIFIER, name) or name in grammar.COMMANDS or name.startswith("__"):
            raise ScriptError(f"{name!r} is not a usable variable name", number)
    if command == "show" and args and args[0] not in {"html", "cookies", "forms", "links", "history"}:
        raise ScriptError(f"cannot show {args[0]!r}", number)


def _check_safe_arg(arg: str, number: int) -> None:
    """Only plain variable references: ``$name``, ``${name}``, ``__name__``."""
    if "`" in arg:
        raise ScriptError(f"backticks are not allowed in safe mode: {arg!r}", number)
    if arg.startswith("__") and not re.fullmatch(_IDENTIFIER, arg):
        raise ScriptError(f"only plain variable names may start with '__': {arg!r}", number)
    if arg.startswith("$") and not arg.startswith("${") and not re.fullmatch(rf"\${_IDENTIFIER}", arg):
        raise ScriptError(f"only plain variable references are allowed: {arg!r}", number)
    if "${" in arg:
        leftover = _PLAIN_DOLLAR.sub("", arg)
        if "${" in leftover:
            raise ScriptError(f"only plain ${{name}} references are allowed: {arg!r}", number)


def check_url(url: str, number: int, *, expanded: bool = False) -> None:
    """Raise ScriptError unless ``url`` is http(s) or relative.

    Before expansion (``expanded=False``) a variable reference passes: the
    runner checks the value it expands to, with ``expanded=True``.
    """
    url = url.strip()
    if not expanded and url.startswith(("$", "__")):
        return
    match = _SCHEME.match(url)
    if match is not None and match.group(1).lower() in ("http", "https"):
        _check_http_url(url, number)
        return
    if match is None or _is_host_and_port(url):
        return
    raise ScriptError(f"only http(s) URLs are allowed, not {match.group(1).lower()}: {url!r}", number)


def _check_http_url(url: str, number: int) -> None:
    """An absolute http(s) URL must parse and name a host (checked again
    once variables have expanded)."""
    if "$" in url or "__" in url:
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (parsing the port is the check)
    except ValueError as error:  # "Invalid IPv6 URL", "Port out of range 0-65535"
        raise ScriptError(f"invalid URL {url!r}: {error}", number) from None
    if not parts.hostname:
        raise ScriptError(f"invalid URL {url!r}: it names no host", number)


def _is_host_and_port(url: str) -> bool:
    """``localhost:8000``, ``127.0.0.1:8000/path`` or ``web1:80``: a host (not
    a scheme's name) and a real port, which twill opens as http."""
    match = _HOST_PORT.match(url)
    return bool(
        match and match.group(1).lower() not in _KNOWN_SCHEMES and 0 < int(match.group(2)) <= 65535
    )


def compile_script(test: Test, site: Site, server: Server | None = None) -> Script:
    """Render ``test.body`` for ``site`` (through ``server``) and validate it.

    Raises ScriptError, with ``site``'s secrets masked: its message quotes
    the rendered line, which may hold one.
    """
    try:
        return validate(render(test.body, context_for(site, test, server)))
    except ScriptError as error:
        raise error.masked(site.secret_values()) from None


def numbered(source: str) -> list[tuple[int, str]]:
    """``(line number, text)`` pairs for showing a script."""
    return list(enumerate(source.splitlines(), 1))
