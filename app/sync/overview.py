"""The console's overview: the pause, the work open and waiting for a person, the oldest unfinished event, the last
reconcile run, and the outcomes per hour. Reads only our database, each read on a small index whatever the size of
the inbox (benchmark 5 in BENCHMARKS.md, at 1,000,000 events).

What the chart counts: **attempts, by the hour they started, by their outcome** (done, failed, needs_review,
retrying, ignored). Attempts are append-only and an attempt lasts seconds, so an hour's figures are final once its
last attempts finish; an event retried three times shows as two ``retrying`` and its final outcome, each in its
hour. An attempt still running (or abandoned with its lease) has no outcome yet and is not counted. The hour of
start, not of finish: ``started_at`` is written once, when the claim inserts the attempt, and never updated, so its
BRIN index (migration 0014) costs the claim next to nothing and keeps the finishing update a HOT update. Nothing of
this is written when a webhook is received.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import String
from sqlmodel import col

from app.db.backlog import backlog
from app.db.dialect import on_postgres
from app.db.models import OPEN_STATUSES, Attempt, AuditEntry, Event, EventStatus, Run
from app.db.tenants import Tenant
from app.db.types import utcnow
from app.sync.operations import pause_state

Window = Literal["24h", "7d"]
WINDOW_HOURS: dict[str, int] = {"24h": 24, "7d": 24 * 7}
# The chart's series, in the order shown: the outcomes an attempt ends with.
OUTCOMES = ("done", "failed", "needs_review", "retrying", "ignored")
# Below this many rows (the estimate's own say) the exact count is cheap and shown instead: a small install sees
# exact figures, and a table the statistics have not caught up with yet is counted.
EXACT_BELOW = 100_000


@dataclass(frozen=True)
class PauseInfo:
    paused: bool
    since: datetime | None = None
    by: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Oldest:
    id: int
    kind: str
    created_at: datetime
    age_seconds: float


@dataclass(frozen=True)
class LastRun:
    id: int
    dry_run: bool
    trigger: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    counts: dict[str, Any]
    error: str | None


@dataclass(frozen=True)
class Overview:
    as_of: datetime
    pause: PauseInfo
    # open: accepted, queued, running; retrying, failed and needs_review each on their own.
    counts: dict[str, int]
    oldest_unfinished: Oldest | None
    last_run: LastRun | None


@dataclass(frozen=True)
class PerHour:
    window: str
    hours: list[str]  # each hour's start, ISO 8601 in UTC ("2026-12-06T15:00:00Z"), oldest first, every hour
    series: dict[str, list[int]]  # an outcome: its count in each of those hours


async def summary(session: AsyncSession, now: datetime | None = None) -> Overview:
    """Every figure from a small index or a one-row lookup: the cost does not grow with the events kept."""
    now = now or utcnow()
    now_open = await backlog(session)  # the partial indexes /metrics reads
    c = now_open.counts
    counts = {
        "open": c[EventStatus.accepted] + c[EventStatus.queued] + c[EventStatus.running],
        "retrying": c[EventStatus.retrying],
        "failed": c[EventStatus.failed],
        "needs_review": c[EventStatus.needs_review],
    }
    return Overview(now, await _pause(session), counts, await _oldest(session, now), await _last_run(session))


async def _pause(session: AsyncSession) -> PauseInfo:
    lease, since = await pause_state(session)
    if lease is None:
        return PauseInfo(paused=False)
    note = (
        await session.execute(
            select(col(AuditEntry.note))
            .where(col(AuditEntry.action) == "pause")
            .order_by(col(AuditEntry.at).desc(), col(AuditEntry.id).desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return PauseInfo(paused=True, since=since, by=lease.owner, note=note)


async def _oldest(session: AsyncSession, now: datetime) -> Oldest | None:
    # The same condition as ix_events_open_subject's, so that only the open events are read and sorted.
    row = (
        await session.execute(
            select(col(Event.id), col(Event.kind), col(Event.created_at))
            .where(col(Event.status).in_(list(OPEN_STATUSES)))
            .order_by(col(Event.created_at), col(Event.id))
            .limit(1)
        )
    ).first()
    if row is None:
        return None
    return Oldest(row.id, row.kind, row.created_at, max(0.0, (now - row.created_at).total_seconds()))


async def _last_run(session: AsyncSession) -> LastRun | None:
    # The reconcile's: round-trip checks keep their results in the same table (app.sync.round_trip)
    newest = select(Run).where(col(Run.kind) == "reconcile").order_by(col(Run.id).desc()).limit(1)
    run = (await session.execute(newest)).scalars().first()
    if run is None:
        return None
    return LastRun(
        run.id, run.dry_run, run.trigger, run.status, run.created_at, run.finished_at, run.counts or {}, run.error
    )


class _HourOf(FunctionElement[str]):
    """The UTC hour a timestamp falls in, as "YYYY-MM-DD HH": the one SQL the two databases spell differently."""

    type = String()
    name = "hour_of"
    inherit_cache = True


@compiles(_HourOf, "postgresql")
def _hour_of_postgresql(element: _HourOf, compiler: Any, **kw: Any) -> str:
    # In UTC whatever the session's time zone (one with a half-hour offset would shift every bucket).
    return f"to_char({compiler.process(element.clauses, **kw)} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24')"


@compiles(_HourOf, "sqlite")
def _hour_of_sqlite(element: _HourOf, compiler: Any, **kw: Any) -> str:
    return f"strftime('%Y-%m-%d %H', {compiler.process(element.clauses, **kw)})"  # stored as UTC text


async def per_hour(session: AsyncSession, window: Window, now: datetime | None = None) -> PerHour:
    """Attempts per hour by outcome, over the last 24 hours or 7 days (the current hour last, so far): one bounded
    GROUP BY (hours x outcomes rows) over the attempts of the window, found on the BRIN index of ``started_at``."""
    if window not in WINDOW_HOURS:
        raise ValueError(f"window must be one of {', '.join(WINDOW_HOURS)}, not {window!r}")
    now = (now or utcnow()).astimezone(UTC)
    last = now.replace(minute=0, second=0, microsecond=0)
    starts = [last - timedelta(hours=n) for n in range(WINDOW_HOURS[window] - 1, -1, -1)]
    hour = _HourOf(col(Attempt.started_at))
    rows = await session.execute(
        select(hour, col(Attempt.outcome), func.count())
        .where(
            col(Attempt.started_at) >= starts[0],
            col(Attempt.started_at) < last + timedelta(hours=1),
            col(Attempt.outcome).in_(OUTCOMES),
        )
        .group_by(hour, col(Attempt.outcome))
    )
    index = {start.strftime("%Y-%m-%d %H"): n for n, start in enumerate(starts)}
    series = {outcome: [0] * len(starts) for outcome in OUTCOMES}
    for key, outcome, count in rows:
        if key in index:
            series[outcome][index[key]] = count
    return PerHour(window, [s.strftime("%Y-%m-%dT%H:00:00Z") for s in starts], series)


async def events_total(session: AsyncSession) -> tuple[int, bool]:
    """How many events are kept, and whether that is an estimate. Counting a million rows exactly takes ~80 ms
    and grows with the table; PostgreSQL's own estimate (the statistics' rows per page, times the pages the table
    has now, as the planner reckons it) costs a lookup. Exact on SQLite, on a table never analysed, when small, and
    once tenants are registered (the table's estimate would count theirs too)."""
    estimate = await _estimated_rows(session, "events") if on_postgres(session) else None
    if estimate is not None and estimate >= EXACT_BELOW and await _any_tenant(session):
        estimate = None
    if estimate is not None and estimate >= EXACT_BELOW:
        return estimate, True
    return (await session.execute(select(func.count()).select_from(Event))).scalar_one(), False


async def _any_tenant(session: AsyncSession) -> bool:
    return (await session.execute(select(col(Tenant.id)).limit(1))).first() is not None


async def _estimated_rows(session: AsyncSession, table: str) -> int | None:
    row = (
        await session.execute(
            text(
                "SELECT reltuples, relpages, pg_relation_size(oid) / current_setting('block_size')::int AS pages "
                "FROM pg_class WHERE oid = to_regclass(:table)"
            ),
            {"table": table},
        )
    ).first()
    if row is None or row.reltuples <= 0:  # -1: never analysed nor vacuumed; 0: empty then, or unknown
        return None
    if row.relpages <= 0:
        return int(row.reltuples)
    return int(row.reltuples / row.relpages * row.pages)
