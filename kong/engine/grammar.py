"""twill's grammar: parse a line exactly as twill would, and know its commands.

Validation (``kong.engine.scripts``) and execution (``kong.engine.runner``)
both read these; importing this module changes none of twill's state.
"""

from __future__ import annotations

import inspect
from functools import lru_cache

from pyparsing import ParseException
from twill import commands, parse

COMMANDS: frozenset[str] = frozenset(commands.__all__)

# The twill releases whose grammar, commands and evaluation paths (parse.process_args,
# execute_command, the commands that write __match__) safe mode was verified
# against. 3.3 and 3.3.1 differ only in formatting and lint comments. A new
# release must be read again before it joins (tests/test_scripts.py holds the
# installed version to this set).
VERIFIED_TWILL: frozenset[str] = frozenset({"3.3", "3.3.1"})


def parse_line(line: str) -> tuple[str, list[str]] | None:
    """Parse one line with twill's grammar; None for a comment.

    Raises ValueError for anything twill would silently skip or truncate,
    such as an unterminated quote.
    """
    parsed = _parse_cached(line)
    return None if parsed is None else (parsed[0], list(parsed[1]))


@lru_cache(maxsize=8192)
def _parse_cached(line: str) -> tuple[str, tuple[str, ...]] | None:
    # twill's pyparsing grammar costs about 0.3 ms a line; fleets repeat
    # most lines (`code 200`) on every site and every run.
    try:
        results = parse.full_command.parse_string(line, parse_all=True)
    except ParseException as error:
        if line.count('"') % 2 or line.count("'") % 2:
            raise ValueError("unterminated quote") from error
        raise ValueError(f"unexpected text at column {error.col}") from error
    if not results:
        return None
    return str(results.command), tuple(str(arg) for arg in results.arguments.as_list())


def arity_error(command: str, args: list[str]) -> str | None:
    """Why ``command`` cannot take ``args`` (twill would fail with a TypeError
    at run time), or None. Commands twill does not define are not checked."""
    function = getattr(commands, command, None)
    if not inspect.isfunction(function) or any(arg.startswith("__") for arg in args):
        return None  # a __name argument may expand to several arguments
    signature = inspect.signature(function)
    try:
        signature.bind(*args)
    except TypeError:
        words = []
        for parameter in signature.parameters.values():
            if parameter.kind is parameter.VAR_POSITIONAL:
                words.append(f"[{parameter.name} ...]")
            elif parameter.default is parameter.empty:
                words.append(f"<{parameter.name}>")
            else:
                words.append(f"[{parameter.name}]")
        usage = " ".join(words) or "no arguments"
        return f"{command} takes {usage}, not {len(args)} argument{'s' if len(args) != 1 else ''}"
    return None
