"""Admin forms that refuse what Kong could not run.

``TestAdminForm`` renders a test's body for one of its sites and validates it
exactly as a check would, so a broken or unsafe script is caught when it is
saved, not at 3 a.m. ``SiteAdminForm`` keeps ``variables`` a JSON object and
never sends secret values back to the browser.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms.models import construct_instance

from kong.conf import kong_settings
from kong.engine.scripts import ScriptError, context_for, render, validate
from kong.masking import MASK, mask
from kong.models import Server, Site, Test, Type
from kong.schedule import validate_schedule_field

# Names a site variable may not take: context_for() sets them after the
# variables, so such a variable would be silently shadowed.
RESERVED_VARIABLES = frozenset({"site", "test", "server"})
# Django templates cannot look up names that start with "_" or hold "-" or ".".
_VARIABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def sample_site(sites: QuerySet[Site] | None, types: QuerySet[Type] | None) -> Site:
    """The site a test body is rendered for when it is saved.

    Its own sites come first (live ones before others), then the first live
    site of its types, then an unsaved "Sample site" so that a test with no
    sites yet is still validated.
    """
    if sites is not None and sites.exists():
        return sites.filter(is_live=True).first() or sites.first()  # type: ignore[return-value]
    if types is not None and types.exists():
        site = Site.objects.filter(type__in=types, is_live=True).order_by("name").first()
        if site is not None:
            return site
    return Site(name="Sample site", slug="sample", servername="www.example.com")


def script_error_message(error: ScriptError, site: Site) -> str:
    """``Line 3: <reason> (rendered for site "LJWorld")``, secrets masked."""
    reason = error.reason[:1].upper() + error.reason[1:]
    text = f"Line {error.line}: {error.reason}" if error.line else reason
    return mask(f'{text} (rendered for site "{site.name}")', site.secret_values())


class TestAdminForm(forms.ModelForm):
    """A Test form that only accepts a body that renders and validates."""

    __test__ = False  # not a pytest class

    class Meta:
        model = Test
        fields = ("name", "slug", "body", "types", "sites", "per_server", "schedule", "timeout", "is_active")
        widgets = {
            "body": forms.Textarea(
                attrs={"rows": 12, "cols": 90, "spellcheck": "false", "style": "font-family: monospace"}
            ),
        }
        help_texts = {
            "body": (
                "A twill script, rendered as a Django template for each site: use {{ site.url }}, "
                "{{ site.slug }}, {{ server }} and each of the site's variables, e.g. {{ username }}. "
                "It is checked against one of its sites when you save."
            ),
        }

    def clean_schedule(self) -> str:
        expression = " ".join(self.cleaned_data["schedule"].split())
        validate_schedule_field(expression)
        return expression

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("body"):
            self._check_body(cleaned)
        return cleaned

    def _check_body(self, cleaned: dict[str, Any]) -> None:
        site = sample_site(cleaned.get("sites"), cleaned.get("types"))
        # A copy carrying the submitted values, so {{ test.name }} renders as
        # it will after saving; the form's own instance is filled in later.
        test = construct_instance(self, copy.copy(self.instance))
        server = self._sample_server(site, test)
        try:
            validate(render(cleaned["body"], context_for(site, test, server)))
        except ScriptError as error:
            self.add_error("body", ValidationError(script_error_message(error, site), code="invalid_script"))

    @staticmethod
    def _sample_server(site: Site, test: Test) -> Server | None:
        if not test.per_server or site.pk is None:
            return None
        return site.servers.filter(is_active=True).first()


def masked_variables(site: Site) -> dict[str, Any]:
    """``site.variables`` with every secret value replaced by ``MASK``.

    Nested values are masked as ``Site.secret_values`` counts them: below a
    name that looks secret (``{"login": {"password": ...}}``, ``{"api_keys":
    [...]}``) every value is masked; elsewhere, any value equal to a secret.
    """
    pattern = re.compile(kong_settings.SECRET_VARIABLES, re.IGNORECASE)
    secrets = set(site.secret_values())

    def walk(value: Any, secret: bool) -> Any:
        if isinstance(value, dict):
            return {name: walk(item, secret or bool(pattern.search(str(name)))) for name, item in value.items()}
        if isinstance(value, list):
            return [walk(item, secret) for item in value]
        if value in (None, ""):
            return value
        return MASK if secret or str(value) in secrets else value

    variables = site.variables if isinstance(site.variables, dict) else {}
    masked: dict[str, Any] = walk(variables, False)
    return masked


def masked_variables_text(site: Site) -> str:
    """``name=value, ...`` of the masked variables, nested ones as JSON."""
    return ", ".join(
        f"{name}={json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value}"
        for name, value in masked_variables(site).items()
    )


_MISSING = object()


def restore_masked(submitted: Any, stored: Any, path: str = "") -> Any:
    """``submitted`` with each ``MASK`` replaced by the stored value at the same
    place (a key path, list positions included). Raises ValidationError for a
    ``MASK`` where nothing is stored."""
    if submitted == MASK:
        if stored is _MISSING:
            raise ValidationError(f"Type the value of {path!r}: it has no stored value.", code="masked_value")
        return stored
    if isinstance(submitted, dict):
        stored_items = stored if isinstance(stored, dict) else {}
        return {
            name: restore_masked(item, stored_items.get(name, _MISSING), f"{path}.{name}" if path else name)
            for name, item in submitted.items()
        }
    if isinstance(submitted, list):
        stored_list = stored if isinstance(stored, list) else []
        return [
            restore_masked(item, stored_list[index] if index < len(stored_list) else _MISSING, f"{path}[{index}]")
            for index, item in enumerate(submitted)
        ]
    return submitted


class SiteAdminForm(forms.ModelForm):
    """A Site form whose ``variables`` is a JSON object with usable names.

    Secret values are shown as ``********``; submitting ``********`` back
    keeps the stored value, so editing other fields never needs the secret.
    """

    class Meta:
        model = Site
        fields = (
            "name", "slug", "type", "servername", "servers", "locations", "is_live",
            "variables", "settings_module", "python_path",
        )  # fmt: skip
        widgets = {"variables": forms.Textarea(attrs={"rows": 6, "cols": 60, "style": "font-family: monospace"})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None and "variables" in self.fields:
            self.initial["variables"] = masked_variables(self.instance)
            self.fields["variables"].help_text += (
                f" Secret values show as {MASK}: leave them to keep the stored value, or type a new one."
            )

    def clean_variables(self) -> dict[str, Any]:
        value = self.cleaned_data["variables"]
        if value is None or value == "":
            return {}
        if not isinstance(value, dict):
            kind = next(
                (name for cls, name in ((str, "a string"), (list, "a list"), (bool, "true/false")) if isinstance(value, cls)),
                "a number",
            )
            raise ValidationError(
                f'Enter a JSON object such as {{"section": "news"}}, not {kind}.', code="not_an_object"
            )
        bad = [name for name in value if not _VARIABLE_NAME.fullmatch(name)]
        if bad:
            raise ValidationError(
                f"Variable names must be letters, digits and underscores, starting with a letter "
                f"(a template cannot use {', '.join(map(repr, bad))}).",
                code="bad_name",
            )
        reserved = sorted(RESERVED_VARIABLES & value.keys())
        if reserved:
            raise ValidationError(
                f"{', '.join(map(repr, reserved))} is set by Kong for every script; choose another name.",
                code="reserved_name",
            )
        return self._restore_secrets(value)

    def _restore_secrets(self, value: dict[str, Any]) -> dict[str, Any]:
        stored = self.instance.variables if self.instance.pk is not None else {}
        stored = stored if isinstance(stored, dict) else {}
        restored: dict[str, Any] = restore_masked(value, stored)
        return restored
