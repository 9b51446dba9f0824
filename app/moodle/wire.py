"""Moodle's REST wire formats: PHP form arrays out (the client) and in (the endpoint that stands in for Moodle),
JSON or XML out."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from html import escape
from typing import Any
from urllib.parse import quote_plus

_INDEX = re.compile(r"\[([^\]]*)\]")
# PHP's max_input_nesting_level: a name with more brackets is dropped before Moodle sees the request.
MAX_NESTING = 64

XML_HEAD = '<?xml version="1.0" encoding="UTF-8" ?>\n'
# A form's fields in order, as posted: ("users[0][username]", "x"); PHP rebuilds the arrays from the names.
Form = list[tuple[str, str]]


def encode_params(params: Mapping[str, Any], prefix: str = "") -> Form:
    """Flatten nested dicts and lists into PHP array notation: ``users[0][username]=...``."""
    out: Form = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        out.extend(_encode_value(name, value))
    return out


def _encode_value(name: str, value: Any) -> Form:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return encode_params(value, name)
    if isinstance(value, (list, tuple)):
        out: Form = []
        for i, item in enumerate(value):
            out.extend(_encode_value(f"{name}[{i}]", item))
        return out
    if isinstance(value, bool):
        return [(name, "1" if value else "0")]
    return [(name, str(value))]


def form_body(form: Form) -> bytes:
    """``urlencode(form)``, byte for byte, made faster: the names repeat from batch to batch (``users[7][email]``)
    and are quoted once; a value of safe characters only goes as it is. A batch of 100 users is a few thousand
    fields, and urlencode's four calls a field were a twentieth of the worker's CPU in a drain (BENCHMARKS.md)."""
    return "&".join(f"{_quoted(name)}={_quote(value)}" for name, value in form).encode()


_UNQUOTED = re.compile(r"[A-Za-z0-9_.~-]*")  # quote_plus's always-safe characters


def _quote(value: str) -> str:
    return value if _UNQUOTED.fullmatch(value) else quote_plus(value)


@functools.lru_cache(maxsize=8192)
def _quoted(name: str) -> str:
    return quote_plus(name)


def decode_form(items: list[tuple[str, str]]) -> dict[str, Any]:
    """``users[0][username]=x`` back into nested dicts; lists stay dicts keyed by index (as PHP sees them)."""
    out: dict[str, Any] = {}
    for name, value in items:
        head, _, rest = name.partition("[")
        if rest.count("[") >= MAX_NESTING:
            continue
        keys = [head] + (_INDEX.findall("[" + rest) if rest else [])
        node = out
        for key in keys[:-1]:
            nxt = node.get(key)
            if not isinstance(nxt, dict):
                nxt = {}
                node[key] = nxt
            node = nxt
        node[keys[-1]] = value
    return out


def _xml_value(value: Any) -> str:
    if value is None:
        return '<VALUE null="null"/>\n'
    if isinstance(value, dict):
        keys = "".join(f'<KEY name="{escape(str(k))}">{_xml_value(v)}</KEY>\n' for k, v in value.items())
        return f"<SINGLE>\n{keys}</SINGLE>\n"
    if isinstance(value, list):
        return "<MULTIPLE>\n" + "".join(_xml_value(v) for v in value) + "</MULTIPLE>\n"
    if isinstance(value, bool):
        value = "1" if value else "0"
    return f"<VALUE>{escape(str(value), quote=False)}</VALUE>\n"


def xml_response(result: Any) -> str:
    """A successful answer as Moodle's REST server writes it in XML."""
    body = "" if result is None else _xml_value(result)
    return f"{XML_HEAD}<RESPONSE>\n{body}</RESPONSE>\n"


def xml_error(body: dict[str, Any]) -> str:
    """An error answer in XML (webservice/rest/locallib.php generate_error)."""
    debug = f"<DEBUGINFO>{escape(str(body['debuginfo']))}</DEBUGINFO>\n" if body.get("debuginfo") else ""
    return (
        f'{XML_HEAD}<EXCEPTION class="{escape(str(body.get("exception", "moodle_exception")))}">\n'
        f"<ERRORCODE>{escape(str(body.get('errorcode', '')))}</ERRORCODE>\n"
        f"<MESSAGE>{escape(str(body.get('message', '')))}</MESSAGE>\n{debug}</EXCEPTION>\n"
    )
