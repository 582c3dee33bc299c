"""The baseline: the same check with raw twill, no Kong and no Django.

    python bench/bare_twill.py loop --url URL --count N
    python bench/bare_twill.py pool --url URL --count N --workers W

Each check is what a hand-written twill loop does to get the same isolation
and output as Kong: a fresh browser (``reset_browser``), the log captured in
memory (``set_output``), then ``execute_string`` of the three-line script.
``pool`` forks a ``multiprocessing`` pool of W processes (its start-up is
timed, as Kong's is) and maps the checks over it. Prints one JSON object:
``{"seconds": ..., "passed": ...}``.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import sys
import time

import twill
from twill import commands, parse

SCRIPT = 'go {url}\ncode 200\nfind "Latest News"'


def check(url: str) -> bool:
    """One check with raw twill; True when it passed."""
    commands.reset_browser()
    twill.set_output(io.StringIO())
    try:
        parse.execute_string(SCRIPT.format(url=url), no_reset=True)
    except Exception:
        return False
    finally:
        twill.set_output(sys.__stdout__)
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["loop", "pool"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    options = parser.parse_args()
    check(options.url)  # warm up, as Kong's pool does before forking
    urls = [options.url] * options.count
    started = time.perf_counter()
    if options.mode == "loop":
        passed = sum(check(url) for url in urls)
    else:
        with multiprocessing.get_context("fork").Pool(options.workers) as pool:
            passed = sum(pool.map(check, urls, chunksize=1))
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "passed": passed}), file=sys.__stdout__)


if __name__ == "__main__":
    main()
