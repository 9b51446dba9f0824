"""Whether Moodle and CourseSales can be used now: one state per upstream, shared by every process.

A fault of the upstream as a whole (maintenance, unreachable, a token that is invalid or whose user is suspended, a
function missing from the token's service, a refused CourseSales login) is not a failure of each event: the work
bound for it waits, spending no attempt and no retry horizon, one probe notices the recovery (app.jobs.probe) and
everything resumes by itself. A fault of one call (a refused item, a 500 on one function) stays the event's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.engine import SessionFactory
from app.db.models import UpstreamState
from app.db.tenancy import get_by_key
from app.db.types import utcnow
from app.settings import Settings
from app.upstream import COURSESALES, MOODLE, Unusable, UpstreamError

OK, UNAVAILABLE, AUTH_FAILED, NOT_CONFIGURED = "ok", "unavailable", "auth_failed", "not_configured"
# The state an upstream is in while it is unusable for each reason the errors give (app/upstream.py).
STATE = {Unusable.UNREACHABLE: UNAVAILABLE, Unusable.MAINTENANCE: UNAVAILABLE, Unusable.CREDENTIALS: AUTH_FAILED}
# What the fault says before the error itself; the token and the login are each upstream's own credentials.
SAYS = {
    (MOODLE, Unusable.UNREACHABLE): "Moodle cannot be reached",
    (MOODLE, Unusable.MAINTENANCE): "Moodle is in maintenance",
    (MOODLE, Unusable.CREDENTIALS): "Moodle refuses the token",
    (COURSESALES, Unusable.UNREACHABLE): "CourseSales cannot be reached",
    (COURSESALES, Unusable.MAINTENANCE): "CourseSales is in maintenance",
    (COURSESALES, Unusable.CREDENTIALS): "CourseSales refuses the login",
}
FIX = {
    (MOODLE, UNAVAILABLE): "nothing to do if Moodle is being upgraded: work resumes by itself once it answers",
    (MOODLE, AUTH_FAILED): "fix the token (SYNC_MOODLE__TOKEN; its user active, its service enabled with every "
    "function `moodle-sync check` lists): work resumes by itself",
    (COURSESALES, UNAVAILABLE): "nothing to do if CourseSales is briefly down: work resumes by itself once it answers",
    (COURSESALES, AUTH_FAILED): "fix the web-services login (SYNC_COURSESALES__USERNAME / __PASSWORD, an active "
    "Soap login): work resumes by itself",
}


@dataclass(frozen=True)
class Fault:
    upstream: str
    state: str
    reason: str


def fault_of(exc: BaseException) -> Fault | None:
    """The upstream-wide fault an error shows, or None when it is the call's own."""
    if not isinstance(exc, UpstreamError) or (why := exc.unusable) is None:
        return None
    return Fault(exc.upstream, STATE[why], f"{SAYS[exc.upstream, why]}: {exc}")


WAITING_MAX = 255  # events.waiting_for


def waiting_text(name: str, state: str, reason: str | None) -> str:
    """What an event held for an upstream says: the fault and its fix, within the column."""
    text = f"{reason}; {FIX.get((name, state), '')}"
    return text if len(text) <= WAITING_MAX else text[: WAITING_MAX - 1] + "…"


def waiting_reason(state: UpstreamState) -> str:
    return waiting_text(state.name, state.state, state.reason)


async def load(session: AsyncSession) -> dict[str, UpstreamState]:
    return {row.name: row for row in (await session.execute(select(UpstreamState))).scalars()}


async def mark(session: AsyncSession, fault: Fault) -> bool:
    """Record the fault; True when the upstream was usable until now (the caller alerts). The caller commits."""
    now = utcnow()
    row = await get_by_key(session, UpstreamState, fault.upstream, with_for_update=True)
    if row is None:
        session.add(
            UpstreamState(name=fault.upstream, state=fault.state, reason=fault.reason, since=now, checked_at=now)
        )
        return True
    news = row.state == OK
    if row.state != fault.state or news:
        row.since, row.alerted_long = now, False
    row.state, row.reason, row.checked_at = fault.state, fault.reason, now
    return news


async def mark_ok(session: AsyncSession, name: str) -> bool:
    """The upstream answers again; True when it had been unusable. The caller commits."""
    row = await get_by_key(session, UpstreamState, name, with_for_update=True)
    now = utcnow()
    if row is None:
        session.add(UpstreamState(name=name, state=OK, since=now, checked_at=now))
        return False
    was_down = row.state != OK
    if was_down:
        row.state, row.reason, row.since, row.alerted_long = OK, None, now, False
    row.checked_at = now
    return was_down


def report(settings: Settings, states: dict[str, UpstreamState]) -> dict[str, dict[str, Any]]:
    """Each upstream's state for /readyz and the API: ok, not_configured, unavailable or auth_failed."""
    out: dict[str, dict[str, Any]] = {}
    for name, configured in ((MOODLE, settings.moodle.configured), (COURSESALES, settings.coursesales.configured)):
        row = states.get(name)
        if not configured:
            out[name] = {"state": NOT_CONFIGURED}
        elif row is None or row.state == OK:
            out[name] = {"state": OK}
        else:
            out[name] = {"state": row.state, "since": _iso(row.since), "reason": row.reason,
                         "fix": FIX.get((name, row.state))}  # fmt: skip
    return out


def _iso(value: datetime) -> str:
    return value.isoformat()


class StateCache:
    """The states as one process last read them, for at most ``ttl`` seconds: every job asks, few need a query."""

    def __init__(self, ttl: float = 1.0) -> None:
        self.ttl = ttl
        self._at = 0.0
        self._states: dict[str, UpstreamState] = {}

    async def get(self, session_factory: SessionFactory) -> dict[str, UpstreamState]:
        if time.monotonic() - self._at > self.ttl:
            async with session_factory() as s:
                self._states = await load(s)
            self._at = time.monotonic()
        return self._states

    def forget(self) -> None:
        self._at = 0.0
