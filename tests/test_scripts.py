"""kong.engine.scripts: rendering a test body for a site, and safe-mode validation."""

from __future__ import annotations

import re

import pytest
from django.test import override_settings

from kong.engine import grammar
from kong.engine.scripts import (
    REFUSED_COMMANDS,
    SAFE_COMMANDS,
    Script,
    ScriptError,
    Step,
    compile_script,
    context_for,
    render,
    validate,
)
from kong.masking import MASK, mask
from kong.models import Site, Test
from tests.factories import make_server, make_site, make_test


def unsaved_site(**fields: object) -> Site:
    fields.setdefault("slug", "ljworld")
    fields.setdefault("name", "LJWorld")
    fields.setdefault("servername", "www.ljworld.com")
    return Site(**fields)


# -- rendering ---------------------------------------------------------------


def test_site_url_adds_http_only_when_there_is_no_scheme():
    assert unsaved_site(servername="www.ljworld.com").url == "http://www.ljworld.com"
    assert unsaved_site(servername="https://secure.example.com/news").url == "https://secure.example.com/news"
    assert unsaved_site(servername="127.0.0.1:8000").url == "http://127.0.0.1:8000"


@pytest.mark.django_db
def test_context_has_site_test_server_and_each_variable():
    server = make_server("web3", hostname="web3.internal")
    site = make_site("kusports", "www.kusports.com", variables={"section": "news", "count": 3}, servers=[server])
    test = make_test(
        "sections",
        body=(
            "go {{ site.url }}/{{ section }}/\n"
            "echo {{ site.slug }} {{ site.servername }} {{ test.slug }} {{ server.hostname }} {{ count }}"
        ),
    )
    script = compile_script(test, site, server)
    assert script.source.splitlines() == [
        "go http://www.kusports.com/news/",
        "echo kusports www.kusports.com sections web3.internal 3",
    ]
    assert context_for(site, test)["server"] is None


def test_autoescape_is_off():
    text = render('find "{{ html }}"', {"html": "<h1 class='x'>News & Views</h1>"})
    assert text == "find \"<h1 class='x'>News & Views</h1>\""


def test_builtin_tags_and_filters_work():
    body = "{% for path in paths %}go {{ base }}{{ path|lower }}\n{% endfor %}"
    assert render(body, {"base": "http://a", "paths": ["/A", "/B"]}) == "go http://a/a\ngo http://a/b\n"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{% load humanize %}go {{ site.url }}", "{% load %} tag is not allowed"),
        ("{% load static %}", "{% load %} tag is not allowed"),
        ('{% include "kong/base.html" %}', "{% include %} tag is not allowed"),
        ('{% extends "kong/base.html" %}', "{% extends %} tag is not allowed"),
        ("{% debug %}", "{% debug %} tag is not allowed"),
        ("{%debug%}", "{% debug %} tag is not allowed"),
        ("{% if %}", "template error"),
        ("{{ site.url|nosuchfilter }}", "template error"),
    ],
)
def test_template_features_outside_the_builtins_are_refused(body, reason):
    with pytest.raises(ScriptError, match="template error") as raised:
        render(body, {"site": unsaved_site()})
    assert reason in str(raised.value)


def test_debug_tag_refusal_does_not_leak_the_context():
    with pytest.raises(ScriptError) as raised:
        render("{% debug %}", {"password": "hunter2"})
    assert "hunter2" not in str(raised.value)


# -- validation ----------------------------------------------------------------


def test_a_plain_script_becomes_steps_with_line_numbers():
    script = validate('# front page\n\ngo http://x/\ncode 200\nfind "Latest News"  # headline\n')
    assert [(step.line, step.command, step.args) for step in script.steps] == [
        (3, "go", ("http://x/",)),
        (4, "code", ("200",)),
        (5, "find", ("Latest News",)),
    ]


def test_crlf_line_endings_from_the_admin_textarea_are_fine():
    script = validate("go http://x/\r\ncode 200\r\n")
    assert [step.command for step in script.steps] == ["go", "code"]


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ('go http://x/\nfind "Latest News', 2, "unterminated quote"),
        ("go http://x/\nfind 'it", 2, "unterminated quote"),
        ("go http://x/\n123 go", 2, "cannot parse"),
        ("go http://x/\n!!!", 2, "cannot parse"),
        ("go http://x/\nfnid News", 2, "unknown twill command 'fnid'"),
    ],
)
def test_unparsable_lines_are_errors_not_skipped(text, line, reason):
    with pytest.raises(ScriptError) as raised:
        validate(text)
    assert raised.value.line == line
    assert reason in raised.value.reason
    assert str(raised.value).startswith(f"line {line}: ")


def test_an_empty_script_is_an_error():
    with pytest.raises(ScriptError, match="no commands"):
        validate("# nothing but a comment\n\n")


# The attack list: every exec or file form the README's safe-mode section names, and the
# argument tricks that make twill evaluate Python. Each is on line 2, after
# an innocent line, so the error must name the right line.
ATTACKS = [
    ('run "import os; os.system(\'id\')"', "executes Python code"),
    ("extend_with os", "imports a Python module"),
    ("runfile /etc/passwd", "runs script files from disk"),
    ("run_file /tmp/evil.twill", "runs script files from disk"),
    ("rf /tmp/evil.twill", "runs script files from disk"),
    ("add_cleanup /tmp/evil.twill", "runs script files from disk"),
    ("save_html /tmp/page.html", "writes files"),
    ("save_cookies /tmp/cookies", "writes files"),
    ("load_cookies /tmp/cookies.pickle", "unpickles a file"),
    ("form_file 1 upload /etc/passwd", "reads files from disk"),
    ("formfile 1 upload /etc/passwd", "reads files from disk"),
    ("redirect_output /tmp/out", "writes files"),
    ("redirect_error /tmp/err", "writes files"),
    ("config readonly_controls_writeable 1", "changes global twill configuration"),
    ("debug http 1", "changes global debugging state"),
    ('get_input "Name: "', "reads from the terminal"),
    ('getpassword "Password: "', "reads from the terminal"),
    ("reset_browser", "not allowed in safe mode"),
    ("echo `id`", "backticks are not allowed"),
    ("go http://x/`id`", "backticks are not allowed"),
    ("echo ${__import__('os').system('id')}", "only plain ${name} references"),
    ('find "${open(\'/etc/passwd\').read()}"', "only plain ${name} references"),
    ("echo a${x}${__import__('os').getcwd()}", "only plain ${name} references"),
    ("echo __import__('os')", "only plain variable names may start with '__'"),
    ("go \"__import__('os').system('id')\"", "only plain variable names may start with '__'"),
    ("echo $x.y", "only plain variable references"),
    ("echo $__builtins__.open", "only plain variable references"),
    ("go file:///etc/passwd", "only http(s) URLs are allowed, not file"),
    ("go FILE:///etc/passwd", "only http(s) URLs are allowed, not file"),
    ("go javascript:alert(document.cookie)", "only http(s) URLs are allowed, not javascript"),
    ("go data:text/html,hello", "only http(s) URLs are allowed, not data"),
    ("fa 1 ftp://x", "only http(s) URLs are allowed, not ftp"),
    ("form_action 1 file:///tmp/x", "only http(s) URLs are allowed, not file"),
    # A scheme followed by a digit is not a host and a port.
    ("go file:0/etc/passwd", "only http(s) URLs are allowed, not file"),
    ("go file:80/etc/passwd", "only http(s) URLs are allowed, not file"),
    ("go file:", "only http(s) URLs are allowed, not file"),
    ("go data:1,hello", "only http(s) URLs are allowed, not data"),
    ("fa 1 javascript:0", "only http(s) URLs are allowed, not javascript"),
    ("go gopher:70/x", "only http(s) URLs are allowed, not gopher"),
    ("go web1:0/x", "only http(s) URLs are allowed, not web1"),
    ("set_global go http://evil/", "not a usable variable name"),
    ("set_global __builtins__ x", "not a usable variable name"),
    ("show secrets", "cannot show"),
]


@pytest.mark.parametrize(("line", "reason"), ATTACKS, ids=[attack for attack, _ in ATTACKS])
def test_safe_mode_refuses_every_line_of_the_attack_list(line, reason):
    with pytest.raises(ScriptError) as raised:
        validate(f"go http://127.0.0.1/\n{line}", safe=True)
    assert raised.value.line == 2
    assert reason in raised.value.reason
    assert str(raised.value).startswith("line 2: ")


def test_every_refused_command_is_a_real_twill_command_and_none_is_allowed():
    assert set(REFUSED_COMMANDS) <= grammar.COMMANDS
    assert not set(REFUSED_COMMANDS) & SAFE_COMMANDS
    assert SAFE_COMMANDS <= grammar.COMMANDS


@pytest.mark.parametrize("command", sorted(REFUSED_COMMANDS))
def test_each_refused_command_says_why(command):
    with pytest.raises(ScriptError) as raised:
        validate(f"{command} x", safe=True)
    assert REFUSED_COMMANDS[command] in raised.value.reason


@pytest.mark.parametrize(
    "line",
    [
        "go http://127.0.0.1:8000/",
        "go https://secure.example.com/",
        "go /relative/path?next=http://x/",
        "go localhost:8000",
        "go 127.0.0.1:8000/path",
        "go web1:8080/health?full=1",
        "go $start",
        "go ${base}/news/",
        "set_global start http://127.0.0.1/",
        "echo $start and ${base}",
        "fv 1 username alice",
        "add_extra_header X-Kong yes",
        "find __match__",
        "show cookies",
        "exit 0",
    ],
)
def test_safe_mode_allows_browsing_forms_assertions_and_plain_variables(line):
    assert validate(line, safe=True).steps[0].line == 1


@override_settings(KONG_SAFE_MODE=False)
def test_unsafe_mode_allows_full_twill_but_still_rejects_unparsable_lines():
    script = validate('run "print(1)"\nextend_with os\nsave_html /tmp/x.html\ngo file:///etc/passwd')
    assert [step.command for step in script.steps] == ["run", "extend_with", "save_html", "go"]
    with pytest.raises(ScriptError, match="unterminated quote"):
        validate('run "print(1)')


@override_settings(KONG_SAFE_MODE=True)
def test_safe_mode_is_the_default_and_follows_the_setting():
    with pytest.raises(ScriptError):
        validate('run "print(1)"')


@pytest.mark.django_db
def test_compile_script_validates_after_rendering_so_variables_cannot_smuggle_code():
    site = make_site(variables={"path": "/news/\nrun \"import os\""})
    test = make_test(body="go {{ site.url }}{{ path }}")
    with pytest.raises(ScriptError) as raised:
        compile_script(test, site)
    assert raised.value.line == 2
    assert "executes Python code" in raised.value.reason


def test_steps_are_plain_picklable_data():
    import pickle

    script = Script(source="go http://x/", steps=(Step(1, "go", ("http://x/",)),))
    assert pickle.loads(pickle.dumps(script)) == script


@pytest.mark.django_db
def test_secret_variables_follow_the_django_pattern():
    site = make_site(
        variables={"password": "hunter2", "api_key": "k-123", "auth_token": "t-9", "section": "news", "Passphrase": "p"}
    )
    assert set(site.secret_values()) == {"hunter2", "k-123", "t-9", "p"}


def test_mask_hides_raw_url_encoded_and_html_escaped_secrets():
    text = "pw=s3cr%C3%A9t%21&x=1 / path: s3cr%C3%A9t%21 / html: a&lt;b&gt; / raw: s3crét!"
    masked = mask(text, ["s3crét!", "a<b>"])
    assert "s3cr" not in masked
    assert "a&lt;b" not in masked
    assert masked == f"pw={MASK}&x=1 / path: {MASK} / html: {MASK} / raw: {MASK}"


def test_test_and_testresult_are_not_collected_by_pytest():
    from kong.models import TestResult

    assert Test.__test__ is False
    assert TestResult.__test__ is False


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("go {{ site.url }", "go takes <url>, not 3 arguments"),
        ("go", "go takes <url>, not 0 arguments"),
        ("back now", "back takes no arguments, not 1 argument"),
        ("fv 1 username", "fv takes <form_name> <field_name> <value>, not 2 arguments"),
        ("find a i x", "find takes <what> [flags], not 3 arguments"),
    ],
)
def test_wrong_argument_counts_are_errors_before_running(line, reason):
    with pytest.raises(ScriptError) as raised:
        validate(f"echo start\n{line}")
    assert (raised.value.line, raised.value.reason) == (2, reason)


def test_the_readme_lists_exactly_the_safe_and_refused_commands():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    listed = text.split("<!-- safe-commands: generated from kong.engine.scripts.SAFE_COMMANDS -->")[1]
    listed = listed.split("<!-- /safe-commands -->")[0]
    assert set(re.findall(r"`(\w+)`", listed)) == SAFE_COMMANDS
    for command in REFUSED_COMMANDS:
        assert f"`{command}`" in text


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('find "(unclosed"', "bad regular expression '(unclosed': missing ), unterminated subpattern at position 0"),
        ('not_find "[a-"', "bad regular expression '[a-': unterminated character set at position 0"),
        ('title "*x"', "bad regular expression '*x': nothing to repeat at position 0"),
        ("code two-hundred", "code takes an HTTP status number, not 'two-hundred'"),
        ("go http://[127.0.0.1/", "invalid URL 'http://[127.0.0.1/': Invalid IPv6 URL"),
        ("go http://", "invalid URL 'http://': it names no host"),
        ("go http://127.0.0.1:99999/", "invalid URL 'http://127.0.0.1:99999/': Port out of range 0-65535"),
    ],
)
def test_arguments_twill_would_choke_on_are_refused_before_the_run(line, reason):
    with pytest.raises(ScriptError) as raised:
        validate(f"go http://127.0.0.1/\n{line}")
    assert (raised.value.line, raised.value.reason) == (2, reason)


@pytest.mark.parametrize("line", ["find $pattern", "code ${status}", "go http://${host}:$port/", "title __title__"])
def test_arguments_with_variables_are_checked_when_they_expand(line):
    assert validate(line).steps[0].line == 1
