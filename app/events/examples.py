"""One example per event kind and per Moodle forwarder format (app/events/examples/), for the tests and the OpenAPI.

Names are paths under that folder, as app.events.registry spells them: ``contact.upserted.json``,
``moodle/tool_trigger.course_completed.json``; the ``.json`` may be left off. Moodle examples that authenticate by a
body ``token`` carry ``MOODLE_TOKEN_PLACEHOLDER`` there, never a working token.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

SUFFIX = ".json"
MOODLE_DIR = "moodle"
MOODLE_TOKEN_PLACEHOLDER = "<SYNC_WEBHOOKS__MOODLE_TOKEN>"  # noqa: S105 - names the setting, not a token


def _root() -> Traversable:
    return files("app.events") / "examples"


@cache
def names() -> tuple[str, ...]:
    """Every example, sorted: top-level files, then one folder level (``moodle/...``)."""
    found: list[str] = []
    for entry in _root().iterdir():
        if entry.is_file() and entry.name.endswith(SUFFIX):
            found.append(entry.name)
        elif entry.is_dir():
            found.extend(f"{entry.name}/{e.name}" for e in entry.iterdir() if e.is_file() and e.name.endswith(SUFFIX))
    return tuple(sorted(found))


@cache
def _parsed(name: str) -> Any:
    folder, _, file = name.rpartition("/")
    entry = _root() / folder / file if folder else _root() / file
    return json.loads(entry.read_text(encoding="utf-8"))


def example(name: str) -> Any:
    """A fresh copy of one example's parsed JSON (change it freely); KeyError naming what exists for an unknown one."""
    full = name if name.endswith(SUFFIX) else name + SUFFIX
    if full not in names():  # also what keeps a name from reaching outside the folder
        raise KeyError(f"no example {name!r}; there are: {', '.join(names())}")
    return copy.deepcopy(_parsed(full))


def coursesales_example(kind: str) -> dict[str, Any]:
    """A whole delivery body of POST /webhooks/coursesales, e.g. ``coursesales_example("contact.upserted")``."""
    body = example(kind)
    if not isinstance(body, dict) or body.get("type") != kind:
        raise KeyError(f"{kind!r} is not a CourseSales event kind with an example")
    return body


def moodle_example(name: str, *, token: str | None = None) -> Any:
    """A body of POST /webhooks/moodle as a forwarder posts it; ``token`` replaces the placeholder where there is one."""
    body = example(f"{MOODLE_DIR}/{name}")
    if token is not None:
        for item in body if isinstance(body, list) else [body]:
            if item.get("token") == MOODLE_TOKEN_PLACEHOLDER:
                item["token"] = token
    return body


def moodle_names() -> tuple[str, ...]:
    """The Moodle examples as ``moodle_example`` takes them: ``local_webhooks.course_completed``, ``list``, ..."""
    prefix = MOODLE_DIR + "/"
    return tuple(n[len(prefix) : -len(SUFFIX)] for n in names() if n.startswith(prefix))
