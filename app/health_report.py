"""The console's "is all well?": live checks of the database, Redis, Moodle and CourseSales, each bounded in time.

Each check asks its upstream now (the console loads them after the page, one request per tile), so each runs under
its own timeout: an upstream that does not answer is a red tile saying so, and the other tiles are still reported.
Moodle is checked as `moodle-sync check` does (app/checks.py: the token's functions, hidden names); CourseSales by
its login alone.

Since when a check has been in its state (green, red or not configured; a new reason while red is the same state):

- Moodle and CourseSales, red, while the shared upstream state (the ``upstream_states`` table, kept by the probe
  loop of app/jobs/probe.py) also says unavailable or auth_failed: that row's ``since``, the same for every process.
- Otherwise (the database, Redis, a green upstream, a fault the probe has not recorded yet): the first time this
  process saw the check in that state, from ``SINCE``, a memory of one entry per check (bounded: four entries).
  It is per process and resets on restart: after a restart "since" is at most as old as the process, and two API
  processes may each give their own. Not kept in Redis or the database on purpose: those are two of the things
  checked, and their own "since" must survive their outage.

Nothing here writes the shared state (the probe alone does), and no text carries a secret: errors are rendered by
the clients without tokens or URLs with credentials, and every line is scrubbed of the settings' secrets as well.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal, get_args

from app.checks import Finding, check_coursesales_login, check_moodle
from app.db.models import UpstreamState
from app.db.schema import schema_problem
from app.db.types import utcnow
from app.runtime import Runtime
from app.sync import upstreams

CheckName = Literal["database", "redis", "moodle", "coursesales"]
NAMES: Final[tuple[CheckName, ...]] = get_args(CheckName)
LABELS: Final[dict[str, str]] = {
    "database": "the database",
    "redis": "Redis",
    "moodle": "Moodle",
    "coursesales": "CourseSales",
}
DEFAULT_TIMEOUT = 5.0
REDIS_FIX = (
    "fix: start Redis or correct SYNC_REDIS_URL; webhooks are still accepted (kept in the database) and their jobs "
    "are queued again once Redis answers"
)
DATABASE_FIX = "fix: start PostgreSQL or correct SYNC_DATABASE_URL; nothing is accepted or worked until it answers"


@dataclass(frozen=True)
class Check:
    """One tile: ``ok`` True (green), False (red) or None (not configured)."""

    name: str
    ok: bool | None
    summary: str
    details: list[str]
    since: datetime
    checked_at: datetime
    seconds: float


@dataclass(frozen=True)
class Verdict:
    """What one check found, before its timing and its since."""

    ok: bool | None
    summary: str
    details: list[str] = field(default_factory=list)


class SinceMemory:
    """When this process first saw each check in its current state; one entry per check name, so it stays small."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, datetime]] = {}

    def since(self, name: str, state: str, now: datetime) -> datetime:
        seen = self._seen.get(name)
        if seen is None or seen[0] != state:
            self._seen[name] = (state, now)
            return now
        return seen[1]

    def forget(self) -> None:
        self._seen.clear()


SINCE = SinceMemory()  # process-wide: see the module docstring


def state_of(ok: bool | None) -> str:
    return "ok" if ok else "not_configured" if ok is None else "failing"


async def _database(rt: Runtime) -> Verdict:
    try:
        problem = await schema_problem(rt.engine)
    except Exception as exc:  # the type only: a driver's message may carry the URL and its password
        return Verdict(False, f"the database does not answer: {type(exc).__name__}", [DATABASE_FIX])
    if problem is not None:
        return Verdict(False, problem)
    return Verdict(True, "the database answers and its schema is current")


async def _redis(rt: Runtime) -> Verdict:
    if rt.queue is None:
        return Verdict(False, "this process has no Redis connection", [REDIS_FIX])
    if await rt.queue.ping():
        return Verdict(True, "Redis answers")
    return Verdict(False, "Redis does not answer", [REDIS_FIX])


def _from_findings(findings: list[Finding]) -> Verdict:
    """Green unless a finding is an error; the details are what is not ok, each with its fix."""
    errors = [f for f in findings if f.level == "error"]
    details = [f"{f.level}: {f.message}" + (f"; fix: {f.fix}" if f.fix else "") for f in findings if f.level != "ok"]
    return Verdict(not errors, (errors or findings)[0].message, details)


async def _moodle(rt: Runtime) -> Verdict:
    if not rt.settings.moodle.configured:
        return Verdict(None, "not configured: set SYNC_MOODLE__URL and SYNC_MOODLE__TOKEN")
    return _from_findings(await check_moodle(rt.moodle))


async def _coursesales(rt: Runtime) -> Verdict:
    if not rt.settings.coursesales.configured:
        return Verdict(None, "not configured: set SYNC_COURSESALES__URL, __USERNAME and __PASSWORD")
    return _from_findings([await check_coursesales_login(rt.coursesales)])


PROBES: Final[dict[str, Callable[[Runtime], Awaitable[Verdict]]]] = {
    "database": _database,
    "redis": _redis,
    "moodle": _moodle,
    "coursesales": _coursesales,
}


async def _bounded(rt: Runtime, name: str, timeout: float) -> tuple[Verdict, float]:
    """The check's verdict within ``timeout`` seconds, and how long it took; never raises."""
    started = time.monotonic()
    try:
        verdict = await asyncio.wait_for(PROBES[name](rt), timeout)
    except TimeoutError:
        verdict = Verdict(False, f"{LABELS[name]} did not answer within {timeout:g} s")
    except Exception as exc:  # a check that breaks is a red tile, never a failed page; the type only
        verdict = Verdict(False, f"the check of {LABELS[name]} failed: {type(exc).__name__}")
    return verdict, time.monotonic() - started


async def _shared_states(rt: Runtime, timeout: float) -> dict[str, UpstreamState]:
    """The probe's recorded states, or none when the database cannot give them in time (its own tile says why)."""
    try:
        async with asyncio.timeout(timeout), rt.sessions() as session:
            return await upstreams.load(session)
    except Exception:  # the database tile reports it
        return {}


async def _no_states() -> dict[str, UpstreamState]:
    return {}


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _finish(rt: Runtime, name: str, verdict: Verdict, seconds: float, row: UpstreamState | None) -> Check:
    """The tile: its since (the shared one where it agrees, see the module docstring), with every secret scrubbed."""
    now = utcnow()
    since = SINCE.since(name, state_of(verdict.ok), now)
    details = list(verdict.details)
    if verdict.ok is False and row is not None and row.state in (upstreams.UNAVAILABLE, upstreams.AUTH_FAILED):
        since = _aware(row.since)
        details.append(f"the service holds the work bound for {LABELS[name]} ({row.state}) since {since.isoformat()}")
    secrets = rt.settings.secret_values()
    return Check(
        name=name,
        ok=verdict.ok,
        summary=_scrub(verdict.summary, secrets),
        details=[_scrub(line, secrets) for line in details],
        since=since,
        checked_at=now,
        seconds=round(seconds, 3),
    )


def _scrub(text: str, secrets: list[str]) -> str:
    for value in secrets:
        text = text.replace(value, "***")
    return " ".join(text.split())  # one plain line: no newlines from an upstream's message


async def run_checks(rt: Runtime, *, timeout: float = DEFAULT_TIMEOUT, names: tuple[str, ...] = NAMES) -> list[Check]:
    """The checks named (all four by default) run concurrently, each bounded by ``timeout`` seconds."""
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        raise ValueError(f"unknown check {unknown[0]!r}: one of {', '.join(NAMES)}")
    upstream = any(n in (upstreams.MOODLE, upstreams.COURSESALES) for n in names)
    states = asyncio.ensure_future(_shared_states(rt, timeout) if upstream else _no_states())
    try:
        results = await asyncio.gather(*(_bounded(rt, name, timeout) for name in names))
    except BaseException:  # cancelled: the states' read goes with it
        states.cancel()
        raise
    rows = await states
    return [
        _finish(rt, name, verdict, seconds, rows.get(name))
        for name, (verdict, seconds) in zip(names, results, strict=True)
    ]
