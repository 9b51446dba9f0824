"""Claiming work: mark ready events as running under a lease, oldest first, safe against concurrent claimers."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, nullcontext
from datetime import timedelta
from typing import Any

from sqlalchemy import Integer, and_, any_, bindparam, func, insert, literal, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlmodel import col

from app.db.dialect import on_postgres
from app.db.models import OPEN_STATUSES, Attempt, Event, EventStatus
from app.db.tenancy import ALL_TENANTS
from app.db.types import utcnow


def _retry_due() -> Any:
    """Ready again: a retry whose time has come (a few, usually; read from ix_events_retry_due)."""
    return and_(col(Event.status) == EventStatus.retrying, col(Event.next_attempt_at) <= bindparam("now"))


def _lease_lapsed() -> Any:
    """Ready again: a run whose holder let its lease run out (read from ix_events_lease)."""
    return and_(col(Event.status) == EventStatus.running, col(Event.lease_until) < bindparam("now"))


def _fresh() -> Any:
    """Waiting for a first run: read in id order from the partial index ix_events_fresh."""
    return col(Event.status).in_(_fixed([EventStatus.accepted, EventStatus.queued]))


def _fixed(values: Iterable[str]) -> list[Any]:
    """A fixed list for an IN: a parameter a value, set once. A list given as values is an "expanding" parameter,
    whose statement is rendered again on every run (with the kinds, 8% of the drain's worker CPU, BENCHMARKS.md)."""
    return [literal(str(v)) for v in values]


def _statements(ready: Any, order: Any, kinds: tuple[str, ...], *, by_ids: bool) -> tuple[Any, Any, Any]:
    """(PostgreSQL's pick, PostgreSQL's take of the picked ids, SQLite's pick-and-take) for one kind of readiness
    and one family's kinds.

    Built once, here: a claim runs for every job, and building these (with their cache keys) each time was a large
    share of a quiet worker's CPU (BENCHMARKS.md). Every value is a bound parameter.
    """
    older = aliased(Event)
    # Events of one subject run one at a time, oldest first: a newer one waits while an older one is open, so a
    # retried old update can never overwrite a newer one.
    waits = (
        select(col(older.id))
        .where(
            col(older.subject) == col(Event.subject),
            col(older.id) < col(Event.id),
            col(older.status).in_(_fixed(OPEN_STATUSES)),
        )
        # OFFSET 0 keeps PostgreSQL from turning the probe into an anti-join, whose plan follows the statistics:
        # analysed when the inbox was empty, it scanned every open event for each candidate (88 s a claim at a
        # backlog of 30,000). As a subplan it is one look-up of ix_events_open_subject per candidate, whatever
        # the statistics say (BENCHMARKS.md, "Measured design decisions").
        .offset(0)
        .exists()
    )
    pick = (
        select(col(Event.id))
        .where(col(Event.kind).in_(_fixed(kinds)), ready, ~waits)
        .order_by(order)
        .limit(bindparam("limit", type_=Integer))
    )
    if by_ids:
        pick = pick.where(col(Event.id).in_(bindparam("ids", expanding=True)))
    take = update(Event).values(
        status=EventStatus.running,
        lease_until=bindparam("lease_until"),
        attempts=col(Event.attempts) + 1,
        updated_at=bindparam("now"),
        waiting_for=None,
    )
    options = {"synchronize_session": False, "populate_existing": True}
    return (
        pick.with_for_update(skip_locked=True, of=Event),
        # The picked ids are the tenant's, locked by this transaction: the take looks them up by primary key alone.
        # With the tenant's criteria too, the planner read the tenant's whole index beside the primary key's (20 ms
        # a claim at a backlog of 30,000; 5 ms without).
        take.where(col(Event.id) == any_(bindparam("picked", type_=ARRAY(Integer))))
        .returning(Event)
        .execution_options(**options, **ALL_TENANTS),
        take.where(col(Event.id).in_(pick.scalar_subquery()), ready).returning(Event).execution_options(**options),
    )


# Each walks its index in that index's order: the due ones longest overdue first, so that no plan can prefer walking
# the primary key in id order through the years of events kept, filtering each (seen with statistics of an empty
# inbox); the fresh ones in id order (claim() returns the batch in id order).
_READINESS = {
    "retry_due": (_retry_due, lambda: col(Event.next_attempt_at)),
    "lease_lapsed": (_lease_lapsed, lambda: col(Event.lease_until)),
    "fresh": (_fresh, lambda: col(Event.id)),
}


@functools.lru_cache(maxsize=256)
def _claims(readiness: str, kinds: tuple[str, ...], by_ids: bool) -> tuple[Any, Any, Any]:
    """The statements of one readiness for one list of kinds (a family's, or a replay's one kind), made once."""
    ready, order = _READINESS[readiness]
    return _statements(ready(), order(), kinds, by_ids=by_ids)


async def claim(
    session: AsyncSession, *, kinds: Sequence[str], limit: int, lease_seconds: int, ids: Iterable[int] | None = None
) -> list[Event]:
    """Mark up to ``limit`` ready events as running under a lease and return them, oldest first.

    Three statements: the due retries and the lapsed leases first, then fresh events. Kept apart, the fresh events are
    walked in id order on their own partial index and the walk stops at ``limit``: one statement with both kinds of
    readiness made PostgreSQL collect, check and sort the whole backlog on every claim (BENCHMARKS.md, "Measured
    design decisions").

    Safe against concurrent claimers: on PostgreSQL the pick locks its rows and skips those another claimer holds;
    on SQLite (one writer at a time) the update re-checks readiness on each row it takes.
    """
    now = utcnow()
    params: dict[str, Any] = {"now": now, "lease_until": now + timedelta(seconds=lease_seconds)}
    if ids is not None:
        params["ids"] = list(ids)
    listed, by_ids = tuple(sorted(kinds)), ids is not None
    events: list[Event] = []
    # Each kind of readiness its own statement, on its own small partial index: one statement with both due kinds
    # (an OR) was planned, from the statistics of an empty inbox, as a read of the tenant's whole index of open events.
    for due in ("retry_due", "lease_lapsed"):
        if len(events) < limit:
            statements = _claims(due, listed, by_ids)
            events += await _claim_where(
                session, statements, {**params, "limit": limit - len(events)}, lapsed=due == "lease_lapsed"
            )
    if len(events) < limit:
        statements = _claims("fresh", listed, by_ids)
        events += await _claim_where(session, statements, {**params, "limit": limit - len(events)}, ordered_walk=True)
    events.sort(key=lambda e: e.id or 0)
    # No attempt row yet: a running attempt is the event itself (status running, its attempts, claimed at its
    # updated_at), and its row is written once, finished (app.db.inbox.finish_all). Written here and updated there,
    # each attempt cost two writes and a look-up of the newest open one (30% of the database's time in a drain).
    return events


async def waiting(session: AsyncSession, kinds: Sequence[str], limit: int) -> int:
    """Events of these kinds waiting for their first run (the fresh pick's readiness), counted up to ``limit``."""
    return int((await session.execute(_counting(tuple(sorted(kinds))), {"limit": limit})).scalar_one())


@functools.lru_cache(maxsize=64)
def _counting(kinds: tuple[str, ...]) -> Any:
    """The count of one family's arrivals, made once, its lists fixed (see _fixed)."""
    fresh = select(col(Event.id)).where(col(Event.kind).in_(_fixed(kinds)), _fresh())
    return select(func.count()).select_from(fresh.limit(bindparam("limit", type_=Integer)).subquery())


@asynccontextmanager
async def _ordered_walk(session: AsyncSession) -> AsyncIterator[None]:
    """Plan the statements inside as an ordered index walk that stops at its LIMIT (PostgreSQL; a no-op on SQLite).

    The planner's idea of how many events wait comes from statistics taken before the burst that made them
    (autoanalyze lags behind a first sync): believing a few dozen, it collected, checked and sorted the whole backlog
    on every claim (BENCHMARKS.md). Only the pick of fresh events runs under this, a one-table SELECT whose one good plan is
    index scans in nested loops, so every other way is priced out (SET LOCAL: it ends with the transaction at latest).
    """
    if not on_postgres(session):
        yield
        return
    await session.execute(_WALK["off"])
    try:
        yield
    finally:
        await session.execute(_WALK["on"])


_WALK = {
    value: text(
        "SELECT "
        + ", ".join(
            f"set_config('{knob}', '{value}', true)"
            for knob in ("enable_seqscan", "enable_bitmapscan", "enable_sort", "enable_hashjoin", "enable_mergejoin")
        )
    )
    for value in ("off", "on")
}


async def _claim_where(
    session: AsyncSession,
    statements: tuple[Any, Any, Any],
    params: dict[str, Any],
    *,
    ordered_walk: bool = False,
    lapsed: bool = False,
) -> list[Event]:
    """``lapsed``: the pick is of runs whose holder let its lease run out; each of those attempts is recorded, lost,
    before its event is taken again."""
    pick, take, pick_and_take = statements
    if on_postgres(session):
        # Two statements: the pick locks its rows, skipping those a concurrent claimer holds (no deadlock, never one
        # row twice), and is planned on its own; the update then takes exactly those rows.
        async with _ordered_walk(session) if ordered_walk else nullcontext():
            picked = list((await session.execute(pick, params)).scalars())
        if not picked:
            return []
        if lapsed:
            await _record_lost(session, picked, params["now"])
        rows = await session.execute(take, {**params, "picked": picked})  # keys it does not bind are ignored
    else:
        # SQLite has one writer at a time: one statement that picks and takes. Lost attempts are recorded first
        # (the write takes the database's one write lock: the pick-and-take then finds the same rows).
        if lapsed:
            picked = list((await session.execute(pick, params)).scalars())
            if not picked:  # nothing lapsed (nearly always): no pick-and-take either
                return []
            await _record_lost(session, picked, params["now"])
        rows = await session.execute(pick_and_take, params)
    return list(rows.scalars())  # claim() orders the two picks together


LOST = "lost"
LOST_WHY = "the worker stopped before it finished (its lease ran out); the event was taken up again"


async def _record_lost(session: AsyncSession, picked: list[int], now: Any) -> None:
    """The attempts of these lapsed runs, as they were: started when claimed (the event's updated_at), lost now.
    Only runs still lapsed are recorded (the same check the take makes)."""
    attempts = Attempt.metadata.tables["attempts"]
    lost = select(
        col(Event.tenant_id), col(Event.id), col(Event.attempts), col(Event.updated_at),
        literal(now, type_=attempts.c.finished_at.type), literal(LOST), literal(LOST_WHY),
    ).where(col(Event.id).in_(picked), _lease_lapsed())  # fmt: skip
    names = ["tenant_id", "event_id", "number", "started_at", "finished_at", "outcome", "error"]
    await session.execute(insert(attempts).from_select(names, lost).execution_options(**ALL_TENANTS), {"now": now})
