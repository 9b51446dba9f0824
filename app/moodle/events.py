"""Moodle events as forwarding plugins post them: local_webhooks, tool_trigger, local_trigger, lists of them.

Numbers may arrive as strings, ``other`` may be flattened into ``other_*`` keys, the body may be JSON
whatever its Content-Type says, and the token may travel inside the body. Everything is normalised here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from app import jsonsafe
from app.db.types import MAX_ID

_DIGITS = re.compile(r"-?[0-9]{1,18}")
ID_FIELDS = ("objectid", "courseid", "relateduserid", "userid", "contextinstanceid", "contextid")
INT_FIELDS = (*ID_FIELDS, "timecreated")
# A Unix time up to the year 10,000: anything later is not a Moodle event's time.
MAX_TIME = 253_402_300_799
# Keys a plugin adds that are not event data (local_webhooks: host, token, extra; local_trigger: user, course).
TRANSPORT_KEYS = frozenset({"token", "host", "extra", "user", "course"})


class BadEvent(ValueError):
    """An item that is not Moodle event data; the message names the field."""


@dataclass(frozen=True)
class MoodleEvent:
    eventname: str
    objectid: int | None
    courseid: int | None
    relateduserid: int | None
    userid: int | None
    timecreated: int
    other: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def dedupe_key(self) -> str:
        """Moodle events carry no id: (eventname, objectid, relateduserid, timecreated) identifies one."""
        return f"{self.eventname}|{self.objectid}|{self.relateduserid}|{self.timecreated}"

    @property
    def short_name(self) -> str:
        return "moodle." + self.eventname.rsplit("\\", 1)[-1]


def parse_body(body: bytes) -> list[dict[str, Any]]:
    """The items of a delivery: JSON first (local_webhooks labels JSON as a form), else a flat form."""
    text = body.decode("utf-8")
    try:
        data = jsonsafe.loads(text)
    except jsonsafe.JSONRefused as exc:
        if "nested" in str(exc):
            raise BadEvent(f"body: {exc}") from None
        pairs = parse_qsl(text, keep_blank_values=True)
        if not pairs:
            raise BadEvent("body is neither JSON nor a form") from None
        data = dict(pairs)
    if isinstance(data, dict) and isinstance(data.get("events"), list):
        data = data["events"]
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(i, dict) for i in items):
        raise BadEvent("body must be an event object or a list of event objects")
    return items


def body_tokens(items: list[dict[str, Any]]) -> list[str | None]:
    return [str(i["token"]) if i.get("token") is not None else None for i in items]


def normalise(item: dict[str, Any]) -> MoodleEvent:
    """One item -> a MoodleEvent with integer ids and ``other`` as an object; transport keys dropped."""
    if any(isinstance(v, str) and "\x00" in v for v in item.values()):
        raise BadEvent("NUL characters are not accepted")
    name = str(item.get("eventname") or "").strip()
    if not name:
        raise BadEvent("eventname: missing")
    name = "\\" + name.replace("\\\\", "\\").lstrip("\\")
    other = item.get("other")
    if isinstance(other, str):
        try:
            other = jsonsafe.loads(other) if other.strip() else {}
        except jsonsafe.JSONRefused as exc:
            if "nested" in str(exc):
                raise BadEvent(f"other: {exc}") from None
            other = {"value": other}
    other = dict(other) if isinstance(other, dict) else {}
    other.update({k[len("other_") :]: v for k, v in item.items() if k.startswith("other_")})  # tool_trigger
    ints = {k: _int(item.get(k), k) for k in INT_FIELDS}
    if ints["timecreated"] is None:
        raise BadEvent("timecreated: missing")
    data = {k: v for k, v in item.items() if k not in TRANSPORT_KEYS and not k.startswith("other_")}
    data.update({k: v for k, v in ints.items() if v is not None}, eventname=name, other=other)
    return MoodleEvent(
        eventname=name,
        objectid=ints["objectid"],
        courseid=ints["courseid"],
        relateduserid=ints["relateduserid"]
        if ints["relateduserid"] is not None
        else _int(other.get("relateduserid"), "other.relateduserid"),
        userid=ints["userid"],
        timecreated=ints["timecreated"],
        other=other,
        data=data,
    )


def _int(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BadEvent(f"{name}: not a number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value.strip()):  # ASCII only: isdigit() takes "²" and "①"
        number = int(value)
    else:
        shown = repr(value) if len(repr(value)) <= 24 else repr(value)[:20] + "..."
        raise BadEvent(f"{name}: {shown} is not a number")
    highest = MAX_TIME if name == "timecreated" else MAX_ID
    if not 0 <= number <= highest:
        # Moodle's ids are 64-bit columns, ours 32-bit: no real site gets near; a larger one is refused, not cut.
        raise BadEvent(f"{name}: out of range (0 to {highest})")
    return number
