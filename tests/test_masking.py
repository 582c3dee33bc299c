"""kong.masking: every printed form of a secret is masked."""

from __future__ import annotations

import html
import json
from urllib.parse import quote, quote_plus

import pytest

from kong.masking import MASK, MIN_TRUNCATED_PREFIX, forms_of, mask

SECRET = "s3cr\u00e9t'<&>\\-" + "a1b2c3d4" * 8  # 75 characters


@pytest.mark.parametrize(
    "form",
    [
        SECRET,
        quote(SECRET, safe=""),
        quote(SECRET),
        quote_plus(SECRET),
        html.escape(SECRET),
        html.escape(SECRET, quote=False),
        html.escape(SECRET).replace("&#x27;", "&#39;"),
        json.dumps(SECRET)[1:-1],
        json.dumps(SECRET, ensure_ascii=False)[1:-1],
        repr(SECRET)[1:-1],
        repr(SECRET + '"')[1:-2],
        ascii(SECRET)[1:-1],
        SECRET.encode("unicode_escape").decode(),
        html.escape(json.dumps(SECRET)[1:-1]),
    ],
    ids=lambda form: form[:24],
)
def test_each_printed_form_is_masked(form):
    assert mask(f"before {form} after", [SECRET]) == f"before {MASK} after"


def test_repr_json_and_xml_of_a_whole_text_hide_the_secret():
    text = f"reason: {SECRET}!"
    for printed in (repr(text), json.dumps(text), json.dumps({"r": text}), html.escape(repr(text))):
        assert "a1b2c3d4" not in mask(printed, [SECRET]), printed


@pytest.mark.parametrize("keep", [36, 20, 8, MIN_TRUNCATED_PREFIX])
def test_a_value_twill_cut_short_is_masked(keep):
    # twill's utils.trunc: value[:length - 4] + " ..."
    printed = f" 2  password  text  pw  {SECRET[:keep]} ..."
    assert mask(printed, [SECRET]) == f" 2  password  text  pw  {MASK} ..."


def test_cut_short_forms_with_other_markers_and_escapes_are_masked():
    assert mask(f"x {SECRET[:30]}\u2026", [SECRET]) == f"x {MASK}\u2026"
    assert mask(f"x {SECRET[:30]}...", [SECRET]) == f"x {MASK}..."
    assert mask(f"x {html.escape(SECRET)[:30]} ...", [SECRET]) == f"x {MASK} ..."


def test_what_is_not_a_cut_secret_stays():
    assert mask(f"{SECRET[: MIN_TRUNCATED_PREFIX - 1]} ...", [SECRET]) == f"{SECRET[: MIN_TRUNCATED_PREFIX - 1]} ..."
    assert mask(f"{SECRET[:30]} and more", [SECRET]) == f"{SECRET[:30]} and more"
    assert mask("Loading ...", [SECRET]) == "Loading ..."


def test_longest_secret_first_and_no_secrets_no_change():
    assert mask("abc abcdef", ["abc", "abcdef"]) == f"{MASK} {MASK}"
    assert mask("text", []) == "text"
    assert mask("text", [""]) == "text"
    assert forms_of("") == set()


def test_masking_a_long_log_with_many_markers_stays_linear():
    log = ("field  text  abcd ... " * 3000) + SECRET
    assert mask(log, [SECRET]).endswith(MASK)
