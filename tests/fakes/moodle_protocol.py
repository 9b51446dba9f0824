"""Moodle's REST wire format for the fake: PHP form parsing, parameter validation, errors, JSON/XML rendering.

Mirrors webservice/rest/locallib.php and external_api::validate_parameters closely enough that the error bodies
(including ``debuginfo``) come out as the recordings in tests/fixtures/moodle show them.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

REQUIRED, OPTIONAL, DEFAULT = "required", "optional", "default"


class _Omitted:
    """A value Moodle's JSON answer leaves out but its XML answer shows as null (optional key with no value)."""

    def __repr__(self) -> str:
        return "OMITTED"


OMITTED: Any = _Omitted()


class MoodleException(Exception):
    """One Moodle exception as the web-service layer reports it."""

    def __init__(self, exception: str, errorcode: str, message: str, debuginfo: str | None = None) -> None:
        super().__init__(message)
        self.exception = exception
        self.errorcode = errorcode
        self.message = message
        self.debuginfo = debuginfo


def invalid_param(debuginfo: str) -> MoodleException:
    return MoodleException(
        "invalid_parameter_exception", "invalidparameter", "Invalid parameter value detected", debuginfo
    )


def moodle_error(errorcode: str, message: str | None = None, debuginfo: str | None = None) -> MoodleException:
    # A moodle_exception whose errorcode has no lang string reads "error/<errorcode>" (014, 080, 147).
    return MoodleException("moodle_exception", errorcode, message or f"error/{errorcode}", debuginfo)


# Classes that 4.5+ moved into the core\exception namespace (DIFF REPORT A); dml_* and webservice_* stayed put.
NAMESPACED_IN_5 = frozenset(
    {"moodle_exception", "invalid_parameter_exception", "invalid_response_exception", "coding_exception"}
)


def exception_class(name: str, version: str) -> str:
    if version.startswith("5") and name in NAMESPACED_IN_5:
        return "core\\exception\\" + name
    return name


# -- form parsing ---------------------------------------------------------------------------------------------------

_BRACKETS = re.compile(r"\[([^\]]*)\]")


def parse_php_form(items: list[tuple[str, str]]) -> dict[str, Any]:
    """Rebuild PHP's $_POST from ``users[0][username]=...`` pairs (insertion order kept, last value wins)."""
    root: dict[str, Any] = {}
    for name, value in items:
        head, _, rest = name.partition("[")
        keys = [head] + (_BRACKETS.findall("[" + rest) if rest else [])
        node = root
        for i, key in enumerate(keys):
            last = i == len(keys) - 1
            if key == "":  # PHP's name[] appends with the next integer key
                key = str(sum(1 for k in node if k.isdigit()))
            if last:
                node[key] = value
            else:
                child = node.get(key)
                if not isinstance(child, dict):
                    child = node[key] = {}
                node = child
    return root


def to_native(value: Any) -> Any:
    """Turn PHP-style dicts with 0..n keys into lists, for the call log and for readability."""
    if isinstance(value, dict):
        items = {k: to_native(v) for k, v in value.items()}
        if items and all(k.isdigit() for k in items):
            return list(items.values())
        return items
    return value


# -- parameter validation (external_api::validate_parameters) ------------------------------------------------------


@dataclass
class Value:
    type: str
    required: str = REQUIRED
    default: Any = None


@dataclass
class Single:
    keys: dict[str, Any]
    required: str = REQUIRED
    default: Any = None


@dataclass
class Multiple:
    content: Any
    required: str = REQUIRED
    default: Any = field(default_factory=list)


def clean_username(value: str) -> str:
    # PARAM_USERNAME with extendedusernamechars=0: trim, lower-case, keep [-.@_a-z0-9].
    return re.sub(r"[^-.@_a-z0-9]", "", value.strip().lower())


_CLEANERS: dict[str, Any] = {
    "int": lambda v: str(int(v)) if re.fullmatch(r"-?\d+", v.strip()) else "0",
    "float": lambda v: v if re.fullmatch(r"[+-]?\d*\.?\d*(e[-+]?\d+)?", v, re.I) else "",
    "username": clean_username,
    "alpha": lambda v: re.sub(r"[^a-zA-Z]", "", v),
    "alphanum": lambda v: re.sub(r"[^a-zA-Z0-9]", "", v),
    "alphaext": lambda v: re.sub(r"[^a-zA-Z_-]", "", v),
    "alphanumext": lambda v: re.sub(r"[^a-zA-Z0-9_-]", "", v),
    "plugin": lambda v: re.sub(r"[^a-z0-9_]", "", v),
    "notags": lambda v: re.sub(r"<[^>]*>", "", v),
    "text": lambda v: re.sub(r"<[^>]*>", "", v),
    "raw_trimmed": str.strip,
    "timezone": lambda v: v if re.fullmatch(r"[\w/+\-.]+", v) else "",
    "lang": lambda v: v if v in ("", "en") else "",
    "theme": lambda v: v if v in ("", "boost", "classic") else "",
}


def _clean_value(value: Any, desc: Value) -> Any:
    if isinstance(value, (dict, list)):
        raise invalid_param("Scalar type expected, array or object received.")
    value = str(value)
    if desc.type == "bool":
        # PHP special case: only 0/1 are accepted, returned as bool.
        if value in ("0", "1"):
            return value == "1"
        raise invalid_param(
            f'Invalid external api parameter: the value is "{value}", the server was expecting "bool" type'
        )
    cleaner = _CLEANERS.get(desc.type)
    if cleaner is not None and cleaner(value) != value:
        raise invalid_param(
            f'Invalid external api parameter: the value is "{value}", the server was expecting "{desc.type}" type'
        )
    if desc.type == "int":
        return int(value)
    if desc.type == "float":
        return float(value)
    return value


def validate(desc: Any, value: Any) -> Any:
    """Validate and clean ``value`` against ``desc`` the way Moodle does, raising its exact debuginfo."""
    if isinstance(desc, Value):
        return _clean_value(value, desc)
    if isinstance(desc, Multiple):
        if not isinstance(value, (dict, list)):
            raise invalid_param(f"Only arrays accepted. The bad value is: '{value}'")
        items = list(value.values()) if isinstance(value, dict) else value
        return [validate(desc.content, item) for item in items]
    if not isinstance(value, (dict, list)):
        raise invalid_param(f"Only arrays accepted. The bad value is: '{value}'")
    given = dict(value) if isinstance(value, dict) else {str(i): v for i, v in enumerate(value)}
    result: dict[str, Any] = {}
    for key, sub in desc.keys.items():
        if key not in given:
            if sub.required == REQUIRED:
                raise invalid_param(f"Missing required key in single structure: {key}")
            if sub.required == DEFAULT:
                result[key] = sub.default
            continue
        try:
            result[key] = validate(sub, given.pop(key))
        except MoodleException as exc:
            raise invalid_param(f"{key} => {exc.message}: {exc.debuginfo}") from None
    if given:
        raise invalid_param(f"Unexpected keys ({', '.join(given)}) detected in parameter array.")
    return result


# -- rendering ------------------------------------------------------------------------------------------------------


def strip_omitted(value: Any) -> Any:
    """The JSON view of an answer: optional keys without a value disappear."""
    if isinstance(value, dict):
        return {k: strip_omitted(v) for k, v in value.items() if v is not OMITTED}
    if isinstance(value, list):
        return [strip_omitted(v) for v in value]
    return value


def _xml_escape(value: str) -> str:
    # htmlspecialchars(ENT_COMPAT): & < > " but not the single quote.
    return html.escape(value, quote=False).replace('"', "&quot;")


def _xmlize(value: Any) -> str:
    if isinstance(value, dict):
        keys = "".join(f'<KEY name="{k}">{_xmlize(v)}</KEY>\n' for k, v in value.items())
        return f"<SINGLE>\n{keys}</SINGLE>\n"
    if isinstance(value, list):
        return "<MULTIPLE>\n" + "".join(_xmlize(v) for v in value) + "</MULTIPLE>\n"
    if value is None or value is OMITTED:
        return '<VALUE null="null"/>\n'
    if isinstance(value, bool):
        value = int(value)
    return f"<VALUE>{_xml_escape(str(value))}</VALUE>\n"


def xml_response(answer: Any) -> str:
    # A function without a return description (enrol/unenrol answer null) gives an empty RESPONSE element.
    body = "" if answer is None else _xmlize(answer)
    return f'<?xml version="1.0" encoding="UTF-8" ?>\n<RESPONSE>\n{body}</RESPONSE>\n'


def xml_error(exception: str, errorcode: str, message: str, debuginfo: str | None) -> str:
    out = f'<?xml version="1.0" encoding="UTF-8" ?>\n<EXCEPTION class="{exception}">\n'
    out += f"<ERRORCODE>{_xml_escape(errorcode)}</ERRORCODE>\n<MESSAGE>{_xml_escape(message)}</MESSAGE>\n"
    if debuginfo is not None:
        out += f"<DEBUGINFO>{_xml_escape(debuginfo)}</DEBUGINFO>\n"
    return out + "</EXCEPTION>\n"
