"""Fair workers: one tenant's backlog never starves another.

Jobs are queued one per event, in the order their events came in, so a tenant's first sync of 30,000 students
would hold back every job queued after it. A job therefore first asks whose turn it is: the tenants with events
waiting for their first run are read in one query (a loose index scan of ``ix_events_fresh``, one index descent per
tenant with work, never a loop per tenant), and the turn goes round them after the one served last. When it is
another tenant's turn, the job runs one round of that tenant's oldest waiting work of its own lane, and queues its
own event again behind it; while several tenants have work, a job runs one round, not a drain of twenty.

The turn is fair by the worker's slots, not by job starts: it goes to the tenant with work that has the fewest rounds
running in this process, and round the tenants among equals. A tenant whose rounds are long (a first sync's batches
of 100 users) would otherwise hold nine slots of ten while a tenant with short rounds (a completion) held one, and
each of its events would wait for every second job start.

With no tenant registered (a single-provider install) none of this runs: a job works as it always did.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import text
from sqlmodel import col, select

from app.db.models import Event, EventStatus
from app.db.tenancy import ALL_TENANTS
from app.db.tenants import Tenant
from app.events.registry import SLOW_KINDS, Lane, spec
from app.runtime import Runtime

# The tenants with events waiting for a first run, in tenant order: one descent of ix_events_fresh per tenant.
_WITH_FRESH_WORK = text(
    """
    WITH RECURSIVE t(id) AS (
        SELECT min(tenant_id) FROM events WHERE status IN ('accepted', 'queued')
        UNION ALL
        SELECT (SELECT min(e.tenant_id) FROM events e WHERE e.status IN ('accepted', 'queued') AND e.tenant_id > t.id)
        FROM t WHERE t.id IS NOT NULL
    )
    SELECT id FROM t WHERE id IS NOT NULL
    """
).execution_options(**ALL_TENANTS)
REGISTERED_CHECK_SECONDS = 5.0


@dataclass
class Turn:
    runtime: Runtime  # whose turn it is
    shared: bool  # other tenants have work waiting too: a job runs one round, then gives way


async def turn(home: Runtime, own: Runtime) -> Turn:
    """Whose turn it is, for a job of ``own``'s event."""
    state = home.hub.turns
    if not await _registered(home):
        return Turn(own, shared=False)
    waiting = await _waiting(home)
    if not waiting or waiting == [own.tenant_id]:
        return Turn(own, shared=False)
    # Another tenant waits, alone or beside this job's own: a job whose own tenant has nothing waiting (its events
    # taken by the rounds of a drain) serves the tenant that does, rather than end and leave it to its own job behind.
    fewest = min(state.running[i] for i in waiting)
    least = [i for i in waiting if state.running[i] == fewest]
    after = [i for i in least if i > state.last_served]
    chosen = after[0] if after else least[0]
    state.last_served = chosen
    shared = len(waiting) > 1
    if chosen == own.tenant_id:
        return Turn(own, shared=shared)
    other = await home.hub.by_id(chosen)
    return Turn(other or own, shared=shared)


async def give_way(home: Runtime, own: Runtime, kind: str) -> bool:
    """Between the rounds of a drain: when another tenant has work waiting now, say so, and queue a job for the
    drain's tenant's oldest waiting work (the drain goes on from there, behind the other tenant's turn). A drain
    that started alone would otherwise hold its worker slot for up to twenty rounds while the other tenant's events
    waited for a free one."""
    if not await _registered(home):
        return False
    if not any(i != own.tenant_id for i in await _waiting(home)) or own.queue is None:
        return False
    # The drain goes on from its tenant's oldest waiting work (its own event was in the rounds just run).
    rest = await oldest_waiting(own, lane_of(kind))
    if rest is not None:
        await own.queue.enqueue_again(*rest)
    return True


async def _waiting(home: Runtime) -> list[int]:
    """The tenants with events waiting for a first run, in tenant order."""
    async with home.sessions() as s:
        return [int(i) for i in (await s.execute(_WITH_FRESH_WORK)).scalars()]


async def _registered(home: Runtime) -> bool:
    """Is any tenant registered (read again every REGISTERED_CHECK_SECONDS)?"""
    state = home.hub.turns
    if time.monotonic() - state.checked > REGISTERED_CHECK_SECONDS:
        async with home.sessions() as s:
            state.registered = (await s.execute(select(col(Tenant.id)).limit(1))).first() is not None
        state.checked = time.monotonic()
    return state.registered


@contextmanager
def working(home: Runtime | None, tenant_id: int) -> Iterator[None]:
    """Count a round of ``tenant_id``'s as running in this process for as long as the block runs."""
    if home is None:
        yield
        return
    running = home.hub.turns.running
    running[tenant_id] += 1
    try:
        yield
    finally:
        running[tenant_id] -= 1
        if not running[tenant_id]:
            del running[tenant_id]


async def oldest_waiting(rt: Runtime, lane: Lane) -> tuple[int, str] | None:
    """The tenant's oldest event waiting for its first run in ``lane`` (a job serves its own queue's lane)."""
    slow = col(Event.kind).in_(sorted(SLOW_KINDS))
    async with rt.sessions() as s:
        row = (
            await s.execute(
                select(col(Event.id), col(Event.kind))
                .where(col(Event.status).in_([EventStatus.accepted, EventStatus.queued]))
                .where(slow if lane == Lane.slow else ~slow)
                .order_by(col(Event.id))
                .limit(1)
            )
        ).first()
    return (int(row[0]), str(row[1])) if row is not None else None


Run = Callable[[Runtime, int, str, int], Awaitable[str]]  # app.jobs.tasks._run_own: (runtime, event, kind, rounds)


async def serve(home: Runtime, other: Runtime, kind: str, rt: Runtime, event_id: int | None, *, run: Run) -> bool:
    """One round of the other tenant's oldest waiting work in this job's lane, this job's event (if it still has
    work) queued again behind it; False when that tenant had nothing it could run now."""
    oldest = await oldest_waiting(other, lane_of(kind))
    if oldest is None:
        return False
    with working(home, other.tenant_id):
        outcome = await run(other, *oldest, 1)
    if not outcome.startswith("processed") or outcome == "processed 0":
        return False
    if rt.queue is not None and event_id is not None:
        await rt.queue.enqueue_again(event_id, kind)
    return True


def lane_of(kind: str) -> Lane:
    known = spec(kind)
    return known.lane if known is not None else Lane.fast
