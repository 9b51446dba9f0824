"""What an event waits for before it can run: an upstream that is not configured yet. Said on the event itself
(``waiting_for``), where the operator looks, not only in a log line repeated every minute."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.events.registry import COURSESALES_KINDS
from app.settings import Settings
from app.sync.upstreams import COURSESALES, MOODLE, OK, waiting_reason

MOODLE_MISSING = "Moodle is not configured: set SYNC_MOODLE__URL and SYNC_MOODLE__TOKEN, then restart"
COURSESALES_MISSING = (
    "CourseSales is not configured: set SYNC_COURSESALES__URL, SYNC_COURSESALES__USERNAME and "
    "SYNC_COURSESALES__PASSWORD, then restart"
)


def waiting_for(settings: Settings, kind: str, states: Mapping[str, Any] | None = None) -> str | None:
    """Why an event of ``kind`` cannot run yet (an upstream it needs not configured, or not usable now per
    ``states``, app.sync.upstreams), or None."""
    needs: tuple[tuple[str, bool, str], ...] = ((MOODLE, settings.moodle.configured, MOODLE_MISSING),)
    if kind in COURSESALES_KINDS:
        needs += ((COURSESALES, settings.coursesales.configured, COURSESALES_MISSING),)
    for _, configured, missing in needs:
        if not configured:
            return missing
    for name, _, _ in needs:
        row = (states or {}).get(name)
        if row is not None and row.state != OK:
            return waiting_reason(row)
    return None


def unconfigured(settings: Settings) -> list[str]:
    """The upstreams not configured yet, by name (a reconcile needs both)."""
    return [name for name, ok in (("Moodle", settings.moodle.configured),
                                  ("CourseSales", settings.coursesales.configured)) if not ok]  # fmt: skip
