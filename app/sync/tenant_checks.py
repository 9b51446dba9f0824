"""What a tenant's registration must be: its slug and name, config keys exactly as sync.toml spells them (an
unknown one named with the closest), values that build its Settings, secrets from the allowed names and neither
weak nor placeholders. Each problem is one line naming its field, never a secret's value."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any, get_args

from pydantic import BaseModel, SecretStr, ValidationError

from app.config_keys import _sections, _unknown_keys
from app.db.tenants import DEFAULT_SLUG, NAME_MAX, SLUG_MAX
from app.settings import Settings
from app.settings_secrets import PLACEHOLDERS, is_set, weak_credentials
from app.sync.operations import OperationError
from app.tenant_settings import HUB_FIELDS, SECRET_NAMES, TENANT_SECTIONS, build_settings

# Not starting with "-": a slug is also a command-line argument.
SLUG = re.compile(rf"[a-z0-9][a-z0-9-]{{0,{SLUG_MAX - 1}}}")
VARIABLE = re.compile(r"\bSYNC_([A-Z0-9_]+)")
SECTION_MODELS: dict[tuple[str, ...], type[BaseModel]] = dict(_sections(Settings))


class TenantError(OperationError):
    """A refused registry change: its HTTP status (404 unknown, 409 in use, 422 bad input) and one line per
    problem, each naming its field."""

    def __init__(self, status: int, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else problems
        super().__init__(status, "; ".join(self.problems))


def check_slug(slug: Any) -> str:
    if not isinstance(slug, str) or not SLUG.fullmatch(slug):
        raise TenantError(422, f"slug: 1 to {SLUG_MAX} characters of a-z 0-9 -, not starting with -")
    if slug == DEFAULT_SLUG:
        raise TenantError(422, f"slug: {DEFAULT_SLUG!r} is the file/environment configuration's; choose another")
    return slug


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > NAME_MAX:
        raise TenantError(422, f"name: 1 to {NAME_MAX} characters")
    return name.strip()


def config_problems(config: Mapping[str, Any]) -> list[str]:
    """The config's keys that a tenant cannot set: the hub's, unknown ones (with the closest), secrets."""
    out: list[str] = []
    for section, value in config.items():
        if section in HUB_FIELDS:
            out.append(f"config.{section} is the hub's: a tenant cannot set it (docs/tenants.md)")
        elif section not in TENANT_SECTIONS:
            out.append(f"config.{section} is not a tenant's section" + _closest(section.lower(), TENANT_SECTIONS))
        elif not isinstance(value, Mapping):
            out.append(f"config.{section} must be a table of settings, as [{section}] in sync.toml")
        else:
            out += _section_problems(section, value)
    return out


def _section_problems(section: str, values: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    model = SECTION_MODELS[(section,)]
    for key, field in model.model_fields.items():
        if key in values and SecretStr in (field.annotation, *get_args(field.annotation)):
            out.append(f"config.{section}.{key} is a secret: give it in secrets as {section.upper()}__{key.upper()}")
    for scope, key, _ in _unknown_keys(values, model, (section,)):
        known = SECTION_MODELS[scope].model_fields
        path = ".".join(scope)
        out.append(f"config.{path}.{key} is not a setting" + _closest(key.lower(), known, prefix=f"config.{path}."))
    return out


def _closest(word: str, choices: Any, *, prefix: str = "config.") -> str:
    for match in difflib.get_close_matches(word, list(choices), n=1):
        return f"; did you mean {prefix}{match}?"
    return ""


def secrets_problems(secrets: Mapping[str, Any], *, removable: bool = False) -> list[str]:
    """Unknown names (with the closest), values that are no text, empty or placeholders; None removes a secret
    where ``removable``."""
    out: list[str] = []
    for name, value in secrets.items():
        if name not in SECRET_NAMES:
            out.append(f"secrets.{name} is not a tenant's secret" + _closest(name, SECRET_NAMES, prefix="secrets."))
        elif value is None and removable:
            continue
        elif not isinstance(value, str):
            out.append(f"secrets.{name} must be a string")
        elif not is_set(SecretStr(value)):
            words = ", ".join(repr(p) for p in sorted(PLACEHOLDERS) if p)
            out.append(f"secrets.{name} is empty or a placeholder ({words} or a <NAME> copied from the docs)")
    return out


def checked_settings(base: Settings, config: Mapping[str, Any], secrets: Mapping[str, str]) -> Settings:
    """The tenant's Settings, or a 422 naming each value that does not validate (config.moodle.url: ...)."""
    try:
        return build_settings(base, config, secrets)
    except ValidationError as exc:
        raise TenantError(422, [_error_line(e["loc"], e["msg"]) for e in exc.errors()]) from None


def _error_line(loc: tuple[int | str, ...], message: str) -> str:
    path = tuple(str(part) for part in loc)
    for name, place in SECRET_NAMES.items():
        if path[:2] == place:
            return f"secrets.{name}: {message}"
    return f"config.{'.'.join(path)}: {message}"


def weak_secrets(settings: Settings, given: Mapping[str, str]) -> list[str]:
    """The checks every credential of the file passes (length, signing secrets, one value for two), for the
    tenant's own, each line naming it as ``secrets.NAME``."""
    out: list[str] = []
    for line in weak_credentials(settings):
        subject = VARIABLE.match(line)
        if subject and subject[1] in given:
            out.append(VARIABLE.sub(lambda m: f"secrets.{m[1]}" if m[1] in given else m[0], line))
    return out
