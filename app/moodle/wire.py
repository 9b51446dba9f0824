"""Moodle's REST wire formats, for the endpoint that stands in for Moodle: form arrays in, JSON or XML out."""

from __future__ import annotations

import re
from html import escape
from typing import Any

_INDEX = re.compile(r"\[([^\]]*)\]")
# PHP's max_input_nesting_level: a name with more brackets is dropped before Moodle sees the request.
MAX_NESTING = 64

XML_HEAD = '<?xml version="1.0" encoding="UTF-8" ?>\n'


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
