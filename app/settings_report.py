"""The effective settings, one row per leaf, each with where its value came from and its secrets masked.

Sources, as pydantic-settings merges them (app.settings): the environment (``SYNC_<SECTION>__<KEY>``), then
SYNC_SECRETS_DIR's files, then the TOML file, then the defaults. The sources are read again here with
pydantic-settings' own readers (case rules, a section's whole JSON, a dict setting's entries all as at load time),
and a source is named only when its value, validated, is the value in effect. A value that no source now gives was
set at start-up by the program itself (dev mode's generated secrets, settings passed in code) or comes from a file
changed since: "startup", so the report never claims a source it cannot show.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, cast, get_args, get_origin

from pydantic import BaseModel, JsonValue, SecretStr, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python
from pydantic_settings import EnvSettingsSource, NestedSecretsSettingsSource, SecretsSettingsSource, SettingsError
from pydantic_settings.sources.utils import parse_env_vars

from app.settings import DEFAULT_FIELD_POLICY, Settings, config_path

Source = Literal["default", "file", "environment", "secrets_dir", "startup"]
MASK = "********"
# A URL's password (user:password@host; greedy to the last "@": a stray one over-masks, never leaks) and
# query parameters named like a credential (?password=, ?wstoken=).
_URL_PASSWORD = re.compile(r"^([A-Za-z][\w+.-]*://[^:/@?#]*):(.*)@")
_QUERY_SECRET = re.compile(r"(?i)([?&][^=&#]*(?:pass|secret|token|key)[^=&#]*=)[^&#]*")
_MIN_KNOWN = 6  # shorter held secrets would mask ordinary words
_MISSING = object()
# The defaults of a dict setting's entries: its rows show every entry in effect, not only the overrides.
DICT_DEFAULTS: dict[tuple[str, ...], Mapping[str, Any]] = {("users", "fields"): DEFAULT_FIELD_POLICY}


@dataclass(frozen=True, slots=True)
class SettingRow:
    """One leaf of the configuration; ``value`` is JSON-able and already masked (it never holds a secret)."""

    section: str  # "" for a top-level setting, "users.fields" for a dict setting's entries
    key: str
    value: JsonValue
    source: Source
    secret: bool
    description: str | None = None


@dataclass(frozen=True)
class Layers:
    """Each source's raw values, highest precedence first (they hold secrets: never shown, never in a repr)."""

    environment: Mapping[str, Any] = field(default_factory=dict, repr=False)
    secrets_dir: Mapping[str, Any] = field(default_factory=dict, repr=False)
    file: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def ordered(self) -> tuple[tuple[Source, Mapping[str, Any]], ...]:
        return (("environment", self.environment), ("secrets_dir", self.secrets_dir), ("file", self.file))


def environment_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """What the environment sets, read as Settings reads it (prefix, case, nesting, JSON); nothing when it cannot
    be read (then its values are reported as set at start-up, not guessed)."""
    source = EnvSettingsSource(Settings)
    source.env_vars = parse_env_vars(environ, source.case_sensitive, source.env_ignore_empty, source.env_parse_none_str)
    try:
        return source()
    except SettingsError:  # its message names the field, never the value
        return {}


def secrets_dir_values(secrets_dir: Path | str | None) -> dict[str, Any]:
    """What the files of SYNC_SECRETS_DIR set, read as Settings reads them; nothing without the directory."""
    if secrets_dir is None or not Path(secrets_dir).is_dir():
        return {}
    try:
        return NestedSecretsSettingsSource(SecretsSettingsSource(Settings, secrets_dir=secrets_dir))()
    except (SettingsError, OSError):
        return {}


def read_file_values(path: Path | None = None) -> dict[str, Any]:
    """The TOML file's tables (default: the file Settings reads); nothing when it is absent or unreadable."""
    path = path or config_path()
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def report(
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    file_values: Mapping[str, Any] | None = None,
    secrets_dir: Path | str | None = None,
) -> list[SettingRow]:
    """Every leaf of every section, in the order of sync.example.toml. Defaults: this process's environment, the
    file at ``config_path()`` parsed now, and the SYNC_SECRETS_DIR that Settings is configured with."""
    directory = secrets_dir if secrets_dir is not None else Settings.model_config.get("secrets_dir")
    layers = Layers(
        environment=environment_values(os.environ if environ is None else environ),
        secrets_dir=secrets_dir_values(directory if isinstance(directory, Path | str) else None),
        file=read_file_values() if file_values is None else file_values,
    )
    held = [v for v in settings.secret_values() if len(v) >= _MIN_KNOWN]
    return [_row(leaf, layers, held) for leaf in leaves(settings)]


@dataclass(frozen=True)
class Leaf:
    """A setting as the file writes it: ``path`` its keys from the top ("moodle", "url")."""

    path: tuple[str, ...]
    info: FieldInfo | None  # None for a dict setting's entry
    value: Any = field(repr=False)
    explicitly_set: bool  # given by some source (pydantic's fields_set), not left at its default


def leaves(settings: Settings) -> Iterator[Leaf]:
    """Top-level settings first, then each section's; a dict setting's entries after the plain keys of its
    section, as the example file's [users.fields] follows [users]."""
    yield from _section_leaves(settings, ())
    for name, info in Settings.model_fields.items():
        if _section_model(info) is not None:
            yield from _section_leaves(getattr(settings, name), (name,))


def _section_leaves(model: BaseModel, scope: tuple[str, ...]) -> Iterator[Leaf]:
    tables: list[str] = []
    for name, info in type(model).model_fields.items():
        if _section_model(info) is not None:
            continue
        if get_origin(info.annotation) is dict:
            tables.append(name)
            continue
        yield Leaf((*scope, name), info, getattr(model, name), name in model.model_fields_set)
    for name in tables:
        given: Mapping[str, Any] = getattr(model, name)
        entries = {**DICT_DEFAULTS.get((*scope, name), {}), **given}
        for entry, value in entries.items():
            yield Leaf((*scope, name, entry), None, value, entry in given)


def _row(leaf: Leaf, layers: Layers, held: list[str]) -> SettingRow:
    secret = _is_secret(leaf.info)
    return SettingRow(
        section=".".join(leaf.path[:-1]),
        key=leaf.path[-1],
        value=_shown(leaf.value, secret, held),
        source=_source(leaf, layers),
        secret=secret,
        description=leaf.info.description if leaf.info is not None else None,
    )


def _source(leaf: Leaf, layers: Layers) -> Source:
    """The first source, by precedence, whose value is the one in effect."""
    effective = _plain(leaf.value)
    for name, values in layers.ordered():
        raw = _lookup(values, leaf.path)
        if raw is not _MISSING and _plain(_validated(leaf.path, raw)) == effective:
            return name
    return "startup" if leaf.explicitly_set else "default"


def _lookup(values: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """A source's raw value at ``path``; the first key matched whatever its case, as pydantic-settings does."""
    node: Any = values
    for depth, key in enumerate(path):
        if not isinstance(node, Mapping):
            return _MISSING
        if key in node:
            node = node[key]
        elif depth == 0:
            node = next((v for k, v in node.items() if isinstance(k, str) and k.lower() == key), _MISSING)
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def _validated(path: tuple[str, ...], raw: Any) -> Any:
    """``raw`` as the setting's own validation makes it; _MISSING when it is not valid (never its error: pydantic
    repeats the input, which may be a secret)."""
    model = _top_level() if len(path) == 1 else _section_model(Settings.model_fields[path[0]])
    keys = path if len(path) == 1 else path[1:]
    data: Any = raw
    for key in reversed(keys):
        data = {key: data}
    try:
        node: Any = model.model_validate(data) if model is not None else _MISSING
        for key in keys:
            node = node[key] if isinstance(node, Mapping) else getattr(node, key)
        return node
    except (ValidationError, ValueError, TypeError, KeyError, AttributeError):
        return _MISSING


@lru_cache
def _top_level() -> type[BaseModel]:
    """The top-level settings as a plain model (validating Settings itself would read every source again)."""
    fields: dict[str, Any] = {
        name: (info.annotation, info) for name, info in Settings.model_fields.items() if _section_model(info) is None
    }
    return create_model("TopLevelSettings", **fields)


def _section_model(info: FieldInfo) -> type[BaseModel] | None:
    annotation = info.annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _is_secret(info: FieldInfo | None) -> bool:
    annotation = info.annotation if info is not None else None
    return annotation is SecretStr or SecretStr in get_args(annotation)


def _plain(value: Any) -> Any:
    """A value to compare: a secret's text (never shown), anything else as JSON."""
    if value is _MISSING:
        return _MISSING
    return value.get_secret_value() if isinstance(value, SecretStr) else to_jsonable_python(value)


def _shown(value: Any, secret: bool, held: list[str]) -> JsonValue:
    """The value as the report shows it: a secret as MASK when set (null when unset), URLs' passwords masked."""
    if secret or isinstance(value, SecretStr):
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        return MASK if text else None
    return _masked(to_jsonable_python(value), held)


def _masked(value: Any, held: list[str]) -> JsonValue:
    if isinstance(value, str):
        return mask_text(value, held)
    if isinstance(value, list):
        return [_masked(item, held) for item in value]
    if isinstance(value, dict):
        return {str(k): _masked(v, held) for k, v in value.items()}
    return cast(JsonValue, value)  # None, a bool or a number, from to_jsonable_python


def mask_text(text: str, held: list[str] | None = None) -> str:
    """``text`` with a URL's password and credential-named query parameters masked, and any of ``held`` (the
    service's own secrets) wherever it appears."""
    for value in held or ():
        text = text.replace(value, MASK)
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\1:{MASK}@", text, count=1)
        text = _QUERY_SECRET.sub(rf"\1{MASK}", text)
    return text
