"""The configuration's own checks: keys of the file and SYNC_ variables that set nothing, each named with the
closest one that does (loading ignores them, so a misspelt key would silently leave its setting at the default)."""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from app.settings import ENV_NOT_SETTINGS, ENV_OTHER_PREFIXES, ENV_PREFIX, Settings, config_path


def unknown_config_keys(path: Path | None = None) -> list[str]:
    """One line per key or section of the configuration file (default: `config_path()`) that is no setting, with
    the closest one. Loading ignores them (``extra="ignore"``, which the environment needs), so a misspelt key
    would silently leave its setting at the default."""
    path = path or config_path()
    if not path.is_file():
        return []
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:  # it loaded a moment ago: changed or removed since
        return [f"cannot read {path.absolute()}: {exc}"]
    return [_unknown_key_line(scope, key, is_table, path) for scope, key, is_table in _unknown_keys(data, Settings)]


def _unknown_keys(
    data: Mapping[str, Any], model: type[BaseModel], scope: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], str, bool]]:
    """(section, key, is a table) of each key of a TOML table that ``model`` does not have, depth first."""
    for key, value in data.items():
        field = _field(model, key, top=not scope)
        if field is None:
            yield scope, key, isinstance(value, dict)
        elif (section := _section_model(field)) is not None and isinstance(value, dict):
            yield from _unknown_keys(value, section, (*scope, key.lower()))
        # Any other value is a setting's (a dict setting such as users.fields validates its own keys).


def _field(model: type[BaseModel], key: str, *, top: bool) -> FieldInfo | None:
    fields = model.model_fields
    if key in fields or not top:
        return fields.get(key)
    # pydantic-settings matches top-level keys and section names whatever their case, but not the keys inside.
    return next((f for name, f in fields.items() if name == key.lower()), None)


def _section_model(field: FieldInfo) -> type[BaseModel] | None:
    """The model of a section of settings (a TOML table, ``SYNC_<SECTION>__*``), None for a setting."""
    annotation = field.annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _sections(model: type[BaseModel], scope: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], type[BaseModel]]]:
    """Every section of settings with its path: ((), Settings) first, then (("moodle",), MoodleSettings)..."""
    yield scope, model
    for name, field in model.model_fields.items():
        if (section := _section_model(field)) is not None:
            yield from _sections(section, (*scope, name))


def _unknown_key_line(scope: tuple[str, ...], key: str, is_table: bool, path: Path) -> str:
    line = f"unknown {'section' if is_table else 'setting'} {_qualified(scope, key, is_table)} in {path.absolute()}"
    fields = dict(_sections(Settings))[scope].model_fields
    # A misspelt [table] is closest to a table, not to a setting with a similar name.
    names = [n for n, f in fields.items() if not is_table or _section_model(f) or get_origin(f.annotation) is dict]
    for match in difflib.get_close_matches(key.lower(), names, n=1):
        return f"{line}; did you mean {_qualified(scope, match, is_table) if is_table else match}?"
    return line + _elsewhere(scope, key, is_table)


def _elsewhere(scope: tuple[str, ...], key: str, is_table: bool) -> str:
    """Where a key that is no setting of its section is one: in TOML, a top-level key written below a [section]
    header belongs to that section."""
    name = key.lower()
    homes = [other for other, model in _sections(Settings) if other != scope and name in model.model_fields]
    if () in homes and not is_table:
        return f"; {name} is a top-level setting: write it above the first [section]"
    if homes:
        return "; did you mean " + " or ".join(_qualified(home, name, is_table) for home in homes) + "?"
    return ""


def _qualified(scope: tuple[str, ...], key: str, is_table: bool) -> str:
    """A key as the file shows it: ``[a.b]`` for a table, ``[a] key`` inside one, ``key`` at the top."""
    if is_table:
        return f"[{'.'.join((*scope, key))}]"
    return f"[{'.'.join(scope)}] {key}" if scope else key


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per ``SYNC_*`` variable (default: this process's) that sets nothing, with the closest variable
    that does. A warning, not a refusal: loading ignores them, as it must ignore variables set for other programs,
    so a misspelt one silently leaves its setting at the file's value or the default."""
    environ = os.environ if environ is None else environ
    names, open_prefixes = _setting_variables()
    out: list[str] = []
    for variable in sorted(environ):
        name = variable.upper()  # pydantic-settings reads them whatever their case
        if not name.startswith(ENV_PREFIX) or name in names or name.startswith(open_prefixes):
            continue
        match = difflib.get_close_matches(
            name.removeprefix(ENV_PREFIX), [n.removeprefix(ENV_PREFIX) for n in names], n=1
        )
        out.append(f"{variable} is not a setting" + (f"; did you mean {ENV_PREFIX}{match[0]}?" if match else ""))
    return out


def _setting_variables() -> tuple[set[str], tuple[str, ...]]:
    """The variables that set something, exactly (a section's whole JSON too: ``SYNC_MOODLE``), and the prefixes
    of the open-ended ones: a dict setting's entries (``SYNC_USERS__FIELDS__PHONE1``), the tests' and benchmarks'."""
    names, prefixes = set(ENV_NOT_SETTINGS), list(ENV_OTHER_PREFIXES)
    for scope, model in _sections(Settings):
        for key, field in model.model_fields.items():
            name = ENV_PREFIX + "__".join((*scope, key)).upper()
            names.add(name)
            if get_origin(field.annotation) is dict:
                prefixes.append(name + "__")
    return names, tuple(prefixes)
