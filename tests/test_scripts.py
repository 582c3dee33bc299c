"""kong.engine.scripts: rendering a test body for a site, and safe-mode validation."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import types

import pytest
from django.db.models import Model
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from tests.factories import make_server, make_site, make_test, make_type


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
    # More exec, eval and file forms of twill 3.3 (commands.py, parse.process_args).
    ("extend_with kong.engine.runner", "imports a Python module"),
    ("get_password", "reads from the terminal"),
    ("getinput x", "reads from the terminal"),
    ("reset_output", "changes process output"),
    ("reset_error", "changes process output"),
    ("redirect_output /dev/stdout", "writes files"),
    ("config use_tidy 0", "changes global twill configuration"),
    ("debug commands 1", "changes global debugging state"),
    ('run ""', "executes Python code"),
    ("echo ${x.__class__}", "only plain ${name} references"),
    ("echo ${x[0]}", "only plain ${name} references"),
    ("echo ${x}${y()}", "only plain ${name} references"),
    ("go ${__import__('os').environ['HOME']}", "only plain ${name} references"),
    ("add_extra_header X ${__import__('os').getcwd()}", "only plain ${name} references"),
    ("follow \"${open('/etc/passwd').read()}\"", "only plain ${name} references"),
    ("code ${__import__('os').getpid()}", "only plain ${name} references"),
    ("echo __x.y", "only plain variable names may start with '__'"),
    ("echo __x()", "only plain variable names may start with '__'"),
    ("find __import__('os').system('id')", "only plain variable names may start with '__'"),
    ("echo $x()", "only plain variable references"),
    ("echo $(id)", "only plain variable references"),
    ("echo $x[0]", "only plain variable references"),
    ("fv 1 q `id`", "backticks are not allowed"),
    ('fv 1 q "`id`"', "backticks are not allowed"),
    ("exit `id`", "backticks are not allowed"),
    ("agent `id`", "backticks are not allowed"),
    ("setlocal __builtins__ x", "not a usable variable name"),
    ("set_local run x", "not a usable variable name"),
    ("setglobal show_forms x", "not a usable variable name"),
    ("set_global a.b x", "not a usable variable name"),
    ("show ../../etc/passwd", "cannot show"),
    ("show __class__", "cannot show"),
    ("go vbscript:msgbox", "only http(s) URLs are allowed, not vbscript"),
    ("go view-source:http://x/", "only http(s) URLs are allowed, not view-source"),
    ("fa 1 data:text/html,x", "only http(s) URLs are allowed, not data"),
    # Quoting and spelling tricks: the command word is what twill's grammar reads.
    ('run"import os"', "executes Python code"),
    (" run 'x'", "executes Python code"),
    ("\trun x", "executes Python code"),
    ("RUN x", "unknown twill command 'RUN'"),
    ("\uff52\uff55\uff4e x", "cannot parse"),  # fullwidth "run"
    ("run\xa0x", "cannot parse"),  # a no-break space is not a separator
    ('echo "a" "b', "unterminated quote"),
    ("echo 'a\"", "unterminated quote"),
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


# -- the template context holds plain values ------------------------------------


@pytest.mark.django_db
def test_a_body_cannot_reach_another_sites_variables_through_relations():
    news = make_type("news")
    server = make_server("web1")
    make_site("a", "a.example.com", type=news, servers=[server], variables={"password": "site-a-secret"})
    b = make_site("b", "b.example.com", type=news, servers=[server], variables={"section": "sport"})
    test = make_test(sites=[b])
    attempts = [
        "{% for s in site.type.sites.all %}{{ s.variables }}{% endfor %}",
        "{% for s in server.sites.all %}{{ s.variables }}{% endfor %}",
        "{% for s in test.sites.all %}{{ s.variables }}{% endfor %}",
        "{% for t in site.type.sites.all.0.test_set.all %}{{ t }}{% endfor %}",
        "{{ site.type.sites.first.variables }}{{ site.servers.all }}{{ site.pk }}{{ site.variables }}",
        "{{ test.body }}{{ test.types.all }}{{ server.sites.all }}{{ site.save }}{{ site.delete }}",
    ]
    for attempt in attempts:
        assert render(f"echo x{attempt}", context_for(b, test, server)) == "echo x", attempt
    assert Site.objects.filter(slug="b").exists()  # {{ site.delete }} deleted nothing


def _plain(value: object) -> bool:
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _plain(item) for key, item in value.items())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return all(_plain(getattr(value, field.name)) for field in dataclasses.fields(value))
    return False


@pytest.mark.django_db
def test_the_context_holds_plain_values_only():
    server = make_server("web3", hostname="web3.internal", internal_ip="10.0.0.3", external_ip="203.0.113.3")
    site = make_site(
        "kusports", "www.kusports.com", name="KUSports", type=make_type("news", name="News"),
        variables={"section": "news", "login": {"user": "u", "password": "p"}}, servers=[server],
    )  # fmt: skip
    test = make_test("front-page", name="Front page")
    context = context_for(site, test, server)
    assert all(_plain(value) for value in context.values())
    assert not any(isinstance(value, Model) for value in context.values())
    assert set(context) == {"section", "login", "site", "test", "server"}


@pytest.mark.django_db
def test_every_documented_context_field_renders():
    server = make_server("web3", name="Web 3", hostname="web3.internal", internal_ip="10.0.0.3", external_ip="203.0.113.3")
    site = make_site(
        "kusports", "https://www.kusports.com:8443/", name="KUSports", type=make_type("news", name="News"),
        variables={"section": "news", "login": {"user": "u"}}, servers=[server],
    )  # fmt: skip
    test = make_test("front-page", name="Front page")
    fields = {
        "{{ site }}": "KUSports",
        "{{ site.name }}": "KUSports",
        "{{ site.slug }}": "kusports",
        "{{ site.url }}": "https://www.kusports.com:8443/",
        "{{ site.servername }}": "https://www.kusports.com:8443/",
        "{{ site.host }}": "www.kusports.com",
        "{{ site.type }}": "News",
        "{{ site.type.name }}": "News",
        "{{ site.type.slug }}": "news",
        "{{ test }}": "Front page",
        "{{ test.name }}": "Front page",
        "{{ test.slug }}": "front-page",
        "{{ server }}": "Web 3",
        "{{ server.name }}": "Web 3",
        "{{ server.slug }}": "web3",
        "{{ server.hostname }}": "web3.internal",
        "{{ server.internal_ip }}": "10.0.0.3",
        "{{ server.external_ip }}": "203.0.113.3",
        "{{ section }}": "news",
        "{{ login.user }}": "u",
    }
    for field, value in fields.items():
        assert render(field, context_for(site, test, server)) == value, field
    # No type, no server: as before, {{ site.type }} is None and {{ server }} is empty in an {% if %}.
    bare = make_site("bare", "bare.example.com")
    assert render("{{ site.type }}|{% if server %}x{% endif %}", context_for(bare, test)) == "None|"


# -- payloads injected through the template from site variables ------------------

# (variables, body, reason): the rendered text is validated, so a variable can
# add lines and arguments but never get past safe mode.
INJECTED = [
    ({"path": '/\nrun "import os"'}, "go {{ site.url }}{{ path }}", "executes Python code"),
    ({"path": "/\rrun 'x'"}, "go {{ site.url }}{{ path }}", "executes Python code"),
    ({"path": "/\u2028extend_with os"}, "go {{ site.url }}{{ path }}", "imports a Python module"),
    ({"path": "/\x85runfile /etc/passwd"}, "go {{ site.url }}{{ path }}", "runs script files from disk"),
    ({"q": 'a"\nrun "x'}, 'find "{{ q }}"', "executes Python code"),
    ({"q": "`id`"}, "echo {{ q }}", "backticks are not allowed"),
    ({"q": "{% load x %}`id`"}, "echo {{ q }}", "backticks are not allowed"),
    ({"q": "${__import__('os').getcwd()}"}, 'find "{{ q }}"', "only plain ${name} references"),
    ({"q": "__import__('os').system('id')"}, "echo {{ q }}", "only plain variable names may start with '__'"),
    ({"q": "$x.__class__"}, "echo {{ q }}", "only plain variable references"),
    ({"url": "file:///etc/passwd"}, "go {{ url }}", "only http(s) URLs are allowed, not file"),
    ({"url": "javascript:alert(1)"}, 'go "{{ url }}"', "only http(s) URLs are allowed, not javascript"),
    ({"name": "go"}, "set_global {{ name }} http://evil/", "not a usable variable name"),
    ({"cmd": "run"}, '{{ cmd }} "import os"', "executes Python code"),
    ({"cmd": "save_html"}, "{{ cmd }} /tmp/x", "writes files"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("variables", "body", "reason"), INJECTED, ids=[body for _, body, _ in INJECTED])
def test_payloads_in_site_variables_never_get_past_safe_mode(variables, body, reason):
    site = make_site(variables=variables)
    with pytest.raises(ScriptError) as raised:
        compile_script(make_test(body=body), site)
    assert reason in raised.value.reason


@pytest.mark.django_db
def test_template_text_in_a_variable_is_printed_not_run():
    site = make_site(variables={"q": "{% debug %}{{ site.pk }}{% load static %}"})
    script = compile_script(make_test(body="echo {{ q }}"), site)
    assert script.source == "echo {% debug %}{{ site.pk }}{% load static %}"


@pytest.mark.django_db
def test_a_script_error_that_quotes_a_secret_is_masked():
    secret = "it's-a-secret\\x"
    site = make_site(variables={"password": secret})
    with pytest.raises(ScriptError) as raised:
        compile_script(make_test(body="go {{ site.url }}\necho {{ password }}"), site)
    assert "unterminated quote" in str(raised.value)
    assert "secret" not in str(raised.value)
    assert MASK in str(raised.value)


def test_the_attack_corpus_has_at_least_forty_lines():
    assert len(ATTACKS) + len(INJECTED) >= 40


# -- twill versions ---------------------------------------------------------------


def test_the_installed_twill_is_a_verified_release():
    import twill

    from kong.engine.grammar import VERIFIED_TWILL

    assert twill.__version__ in VERIFIED_TWILL


def test_setup_py_allows_only_the_twill_line_safe_mode_was_verified_against():
    from pathlib import Path

    from packaging.requirements import Requirement

    from kong.engine.grammar import VERIFIED_TWILL

    setup = (Path(__file__).resolve().parent.parent / "setup.py").read_text()
    spec = Requirement(re.search(r'"(twill[^"]*)"', setup).group(1)).specifier
    assert all(version in spec for version in VERIFIED_TWILL)
    # The same minor line: a new minor release must be read before it is allowed.
    assert "3.4" not in spec
    assert "3.2.5" not in spec


# -- at run time: nothing but plain names is ever evaluated ------------------------

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMMAND_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\(\*__args__\)")
_INSTALLATION = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix})
_WATCH = {"active": False, "violations": []}
# Audit events that mean a process, a file, a socket or native code: none may
# happen while a safe script runs (the WSGI app answers in-process).
_FORBIDDEN = ("os.", "subprocess.", "shutil.", "socket.", "pickle.", "marshal.", "ctypes.", "pty.", "webbrowser.")
_IMPORT_MACHINERY = ("os.listdir", "os.scandir", "os.stat")


def _installed(path: object) -> bool:
    return isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path).startswith(_INSTALLATION)


def _audit(event: str, args: tuple) -> None:
    """Records what a running script must never do. Audit hooks see every
    eval, exec, compile and open in the process, C code's included."""
    if not _WATCH["active"]:
        return
    violations = _WATCH["violations"]
    if event == "compile":
        source, filename = args
        text = source.decode() if isinstance(source, bytes) else source
        if isinstance(text, str) and (_PLAIN_NAME.fullmatch(text) or _command_call(text)):
            return  # twill's process_args (a name) and execute_command ("go(*__args__)")
        if _installed(filename):
            return  # a module imported for the first time
        violations.append(f"compile {text!r} from {filename!r}")
    elif event == "exec":
        code = args[0]
        if isinstance(code, types.CodeType) and (_installed(code.co_filename) or _trivial(code)):
            return
        violations.append(f"exec {code!r}")
    elif event == "open":
        path, mode = args[0], args[1]
        if _installed(path) and (mode is None or "r" in str(mode)) and "+" not in str(mode or ""):
            return  # reading a module to import it (encodings.idna for a unicode host, say)
        violations.append(f"open {path!r} {mode!r}")
    elif event.startswith(_FORBIDDEN) and not (event in _IMPORT_MACHINERY and _installed(args[0])):
        violations.append(f"{event} {args!r}"[:200])


def _command_call(text: str) -> bool:
    match = _COMMAND_CALL.fullmatch(text)
    return bool(match and match.group(1) in grammar.COMMANDS)


def _trivial(code: types.CodeType) -> bool:
    """A code object compiled from a plain name or ``command(*__args__)``."""
    return (
        code.co_filename.startswith("<")
        and len(code.co_names) <= 2
        and all(_PLAIN_NAME.fullmatch(name) for name in code.co_names)
        and not any(isinstance(const, types.CodeType) for const in code.co_consts)
    )


EVIL_TITLE = "${__import__('os').system('touch /tmp/kong-pwned')}"
EVIL_PAGE = (
    f"<html><head><title>{EVIL_TITLE}</title></head><body><p>Kong</p>"
    "<p id='a'>__import__('os').getcwd()</p><p id='b'>`id`</p><p id='c'>$x.__class__</p>"
    "<form method='post' action='/'><input name='q' value=\"${open('/etc/passwd').read()}\">"
    "<input type='submit'></form><a href='/next'>next</a></body></html>"
).encode()


def evil_page(environ, start_response):
    """Every page's text is Python that twill would run if it evaluated it."""
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [EVIL_PAGE]


def _run(script: Script):
    from kong.engine import runner

    job = runner.Job(key=1, label="property", script=script, timeout=20, request_timeout=5)
    if not _WATCH.get("hooked"):  # once per process: audit hooks cannot be removed
        sys.addaudithook(_audit)
        _WATCH["hooked"] = True
    _WATCH["violations"] = []
    _WATCH["active"] = True
    try:
        outcome = runner.execute(job, app=evil_page)
    finally:
        _WATCH["active"] = False
    return outcome, list(_WATCH["violations"])


def _warm_up() -> None:
    """Run every safe command once unwatched, so first-time imports are done."""
    lines = [f"{command} x" if command != "exit" else "echo x" for command in sorted(SAFE_COMMANDS - {"sleep"})]
    for line in ["go http://kong.test/", *lines, "show_forms", "submit", "follow next", "go http://k\u00e9ng.test/"]:
        try:
            _run(validate(f"go http://kong.test/\n{line}", safe=True))
        except ScriptError:
            pass


def test_variables_set_from_page_text_are_never_evaluated():
    _warm_up()
    script = validate(
        "\n".join(
            [
                "go http://kong.test/",
                'title "(.*)"',  # __match__ = the page's title: ${__import__('os')...}
                "set_global t __match__",
                "echo $t",
                "echo ${t}",
                "echo __t",
                "echo __match__",
                'set_local u "${t}-${t}"',
                "echo ${u}",
                'find "<p id=.a.>([^<]*)</p>"',
                "set_global a __match__",
                "echo $a __a ${a}",
                'find "<p id=.c.>([^<]*)</p>"',
                "echo __match__ ${__match__}",
                "show_forms",
                "fv 1 q ${t}",
                "submit",
                "go ${t}",
            ]
        ),
        safe=True,
    )
    outcome, violations = _run(script)
    assert violations == []
    assert outcome.status == "passed", outcome.reason
    assert EVIL_TITLE in outcome.log  # printed as text
    assert not os.path.exists("/tmp/kong-pwned")


# Words a generated line is made of: mostly safe ones, and every trick the attack list uses.
_SAFE_TOKENS = [
    "x", "y", "$x", "${x}", "__x", "$t", "${t}", "__t", "__match__", "$__match__", "${__match__}", "${x}${y}",
    "a${x}b", "http://kong.test/", "http://kong.test/next", "/next", "next", "200", "404", "1", "q", "Kong",
    "(.*)", "i", "__import__", "__builtins__", "$__builtins__",
]  # fmt: skip
_TRICK_TOKENS = [
    "${ x }", "$", "__", "${__import__('os')}", "`id`", "__import__('os')", "$x.y", "$x()", "${x.y}",
    "open('/etc/passwd')", "file:///etc/passwd", "javascript:x", "#", "'", '"', "\\n", "exec", "eval", "run",
    "`", "${", "}", "$(", "(", ")", "import", "os", "\\", ";", "${t}${__import__('os')}",
]  # fmt: skip
_COMMANDS = [*sorted(SAFE_COMMANDS - {"sleep"}), "run", "extend_with", "save_html", "runfile", "config"]


def _arity(command: str) -> tuple[int, int]:
    """How many arguments twill's function for ``command`` takes (at most 3)."""
    import inspect

    from twill import commands

    parameters = inspect.signature(getattr(commands, command)).parameters.values()
    required = sum(1 for p in parameters if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD)
    variadic = any(p.kind is p.VAR_POSITIONAL for p in parameters)
    return required, 3 if variadic else min(len(parameters), 3)


def _arg() -> st.SearchStrategy[str]:
    token = st.one_of(st.sampled_from(_SAFE_TOKENS), st.sampled_from(_SAFE_TOKENS), st.sampled_from(_TRICK_TOKENS))
    text = st.text(alphabet="abx$_{}()'\"`.#/:\\ ", max_size=8)
    word = st.one_of(token, token, token, st.builds(str.__add__, token, token), text)
    return st.one_of(word, word, word.map(lambda value: f'"{value}"'), word.map(lambda value: f"'{value}'"))


@st.composite
def _line(draw: st.DrawFn) -> str:
    command = draw(st.sampled_from(_COMMANDS))
    low, high = _arity(command)
    args = draw(st.lists(_arg(), min_size=low, max_size=max(low, high)))
    return " ".join([command, *args])


_LINE = _line()


@settings(max_examples=200, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(lines=st.lists(_LINE, min_size=1, max_size=2))
def test_any_line_safe_mode_accepts_evaluates_only_plain_names_and_touches_no_file(lines):
    prelude = ["go http://kong.test/", "set_global x hello", "set_global y world", 'title "(.*)"', "set_global t __match__"]
    try:
        script = validate("\n".join([*prelude, *lines]), safe=True)
    except ScriptError:
        return  # refused: nothing runs
    if not _WATCH.get("warm"):
        _warm_up()
        _WATCH["warm"] = True
    outcome, violations = _run(script)
    _WATCH["ran"] = _WATCH.get("ran", 0) + 1
    assert violations == [], (lines, outcome.reason)
    assert not os.path.exists("/tmp/kong-pwned")


def test_the_watch_catches_what_unsafe_twill_does():
    """The instrument above is not blind: full twill (safe mode off) trips it."""
    script = validate(
        'go http://kong.test/\nrun "import os; os.getcwd()"\necho ${len(__url__)}\nsave_html /dev/null',
        safe=False,
    )
    outcome, violations = _run(script)
    assert outcome.status == "passed", outcome.reason
    assert any("import os" in violation for violation in violations)
    assert any("len(" in violation for violation in violations)
    assert any(violation.startswith("open '/dev/null'") for violation in violations)


def test_the_property_ran_many_accepted_scripts():
    """Runs after the property (file order): most examples must not be refusals."""
    if "ran" not in _WATCH:
        pytest.skip("the property test did not run in this session")
    assert _WATCH["ran"] >= 50
