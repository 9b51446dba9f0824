"""The inbox: accept a delivery exactly once, claim ready events for work, record how each attempt ended."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.orm.attributes import set_committed_value

from app.db.models import OPEN_STATUSES, Attempt, Event, EventStatus
from app.db.types import utcnow
from app.db.upsert import insert_for


class BodyMismatch(Exception):
    """The delivery id was seen before with a different body."""

    def __init__(self, event: Event) -> None:
        super().__init__(f"delivery id {event.dedupe_key!r} was already used for a different body (event {event.id})")
        self.event = event


@dataclass
class Outcome:
    """How one event ended this time."""

    status: EventStatus
    error: str | None = None
    result: dict[str, Any] | None = None
    next_attempt_at: datetime | None = None
    # For failed and needs_review outcomes: the alert's cause (default "event.<status>") and what fixes it.
    alert: str | None = None
    fix: str | None = None


@dataclass
class Delivery:
    """One event as accepted from a sender, before it is stored."""

    source: str
    kind: str
    dedupe_key: str
    body_hash: str
    payload: dict[str, Any]
    subject: str | None = None
    secret: str | None = None
    status: EventStatus = EventStatus.accepted
    result: dict[str, Any] | None = field(default=None)


def _row(delivery: Delivery, now: datetime) -> dict[str, Any]:
    return {
        "source": delivery.source,
        "kind": delivery.kind,
        "dedupe_key": delivery.dedupe_key,
        "body_hash": delivery.body_hash,
        "payload": delivery.payload,
        "subject": delivery.subject,
        "secret": delivery.secret,
        "status": delivery.status,
        "result": delivery.result,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


@dataclass(frozen=True)
class Stored:
    """Where one delivery of a batch ended up: its event, and whether this batch made it."""

    event_id: int
    status: EventStatus
    created: bool


async def accept_many(session: AsyncSession, deliveries: Sequence[Delivery]) -> list[Stored | BodyMismatch]:
    """Insert each delivery unless (source, dedupe_key) exists, in two statements: one multi-row insert, one look-up
    of the repeats; a repeat with another body gets a BodyMismatch. Every sender's deliveries come in this way,
    through app.db.group_commit.

    Answers in the order given. A delivery id twice in one batch: the first makes the event, the second is its
    repeat (or a BodyMismatch). The caller commits.
    """
    now = utcnow()
    made = (
        await session.execute(
            insert_for(session, Event.__table__)  # Core, not the ORM's bulk insert: nothing here needs objects
            .on_conflict_do_nothing(index_elements=["source", "dedupe_key"])
            .returning(Event.id, Event.source, Event.dedupe_key, Event.status),
            [_row(d, now) for d in deliveries],
        )
    ).all()
    fresh = {(r.source, r.dedupe_key): r for r in made}
    firsts: set[tuple[str, str]] = set()
    repeats: list[Delivery] = []
    for d in deliveries:
        key = (d.source, d.dedupe_key)
        if key in fresh and key not in firsts:
            firsts.add(key)
        else:
            repeats.append(d)
    existing = await _existing(session, repeats) if repeats else {}
    out: list[Stored | BodyMismatch] = []
    for d in deliveries:
        key = (d.source, d.dedupe_key)
        row = fresh.pop(key, None)
        if row is not None:
            out.append(Stored(row.id, row.status, True))
            continue
        event = existing[key]
        mismatch = event.body_hash != d.body_hash
        out.append(BodyMismatch(event) if mismatch else Stored(event.id, event.status, False))  # type: ignore[arg-type]
    return out


async def _existing(session: AsyncSession, deliveries: Sequence[Delivery]) -> dict[tuple[str, str], Event]:
    by_source: dict[str, set[str]] = {}
    for d in deliveries:
        by_source.setdefault(d.source, set()).add(d.dedupe_key)
    where = or_(*(and_(Event.source == src, Event.dedupe_key.in_(sorted(keys))) for src, keys in by_source.items()))
    return {(e.source, e.dedupe_key): e for e in (await session.execute(select(Event).where(where))).scalars()}


def _due(now: datetime) -> Any:
    """Ready again: a retry whose time has come, or a run whose holder let its lease run out (a few, usually)."""
    return or_(
        and_(Event.status == EventStatus.retrying, Event.next_attempt_at <= now),
        and_(Event.status == EventStatus.running, Event.lease_until < now),
    )


def _fresh() -> Any:
    """Waiting for a first run: read in id order from the partial index ix_events_fresh."""
    return Event.status.in_([EventStatus.accepted, EventStatus.queued])


async def claim(
    session: AsyncSession, *, kinds: Sequence[str], limit: int, lease_seconds: int, ids: Iterable[int] | None = None
) -> list[Event]:
    """Mark up to ``limit`` ready events as running under a lease and return them, oldest first.

    Two statements: the due retries and lapsed leases first, then fresh events. Kept apart, the fresh events are
    walked in id order on their own partial index and the walk stops at ``limit``: one statement with both kinds of
    readiness made PostgreSQL collect, check and sort the whole backlog on every claim (45 ms a claim at 15,000
    waiting, most of a first sync's database time).

    Safe against concurrent claimers: the outer WHERE re-checks readiness on each locked row,
    so a row another worker took in the meantime is skipped, not taken twice.
    """
    now = utcnow()
    wanted = list(ids) if ids is not None else None
    events = await _claim_where(session, _due(now), now, kinds, limit, lease_seconds, wanted)
    if len(events) < limit:
        events += await _claim_where(
            session, _fresh(), now, kinds, limit - len(events), lease_seconds, wanted, ordered_walk=True
        )
    if not events:
        return []
    events.sort(key=lambda e: e.id or 0)
    # Rows, not objects: one executemany, without building (and flushing) an ORM object an event.
    await session.execute(
        insert(Attempt.__table__),  # type: ignore[attr-defined]
        [{"event_id": e.id, "number": e.attempts, "started_at": now, "outcome": "running"} for e in events],
    )
    return events


@asynccontextmanager
async def _ordered_walk(session: AsyncSession) -> AsyncIterator[None]:
    """Plan the statements inside as an ordered index walk that stops at its LIMIT (PostgreSQL; a no-op on SQLite).

    The planner's idea of how many events wait comes from statistics taken before the burst that made them
    (autoanalyze lags behind a first sync): believing a few dozen, it collected, checked and sorted all 15,000 on every
    claim (37 ms a claim). Only the pick of fresh events runs under this, a one-table SELECT whose one good plan is
    index scans in nested loops, so every other way is priced out (SET LOCAL: it ends with the transaction at latest).
    """
    if session.bind.dialect.name != "postgresql":
        yield
        return
    await session.execute(text(_PLANNER.format(value="off")))
    try:
        yield
    finally:
        await session.execute(text(_PLANNER.format(value="on")))


_PLANNER = "SELECT " + ", ".join(
    f"set_config('{knob}', '{{value}}', true)"
    for knob in ("enable_seqscan", "enable_bitmapscan", "enable_sort", "enable_hashjoin", "enable_mergejoin")
)


async def _claim_where(
    session: AsyncSession,
    ready: Any,
    now: datetime,
    kinds: Sequence[str],
    limit: int,
    lease_seconds: int,
    ids: list[int] | None,
    *,
    ordered_walk: bool = False,
) -> list[Event]:
    older = aliased(Event)
    # Events of one subject (one contact, one course date) run one at a time, oldest first: a newer one waits
    # while an older one is open, so a retried old update can never overwrite a newer one.
    waits = (
        select(older.id)
        .where(older.subject == Event.subject, older.id < Event.id, older.status.in_(list(OPEN_STATUSES)))
        .exists()
    )
    pick = select(Event.id).where(Event.kind.in_(kinds), ready, ~waits).order_by(Event.id).limit(limit)
    if ids is not None:
        pick = pick.where(Event.id.in_(ids))
    take = update(Event).values(
        status=EventStatus.running,
        lease_until=now + timedelta(seconds=lease_seconds),
        attempts=Event.attempts + 1,
        updated_at=now,
    )
    if session.bind.dialect.name == "postgresql":
        # Two statements: the pick locks its rows, skipping those a concurrent claimer holds (no deadlock, never one
        # row twice), and is planned on its own; the update then takes exactly those rows.
        async with _ordered_walk(session) if ordered_walk else nullcontext():
            picked = list((await session.execute(pick.with_for_update(skip_locked=True, of=Event))).scalars())
        if not picked:
            return []
        take = take.where(Event.id.in_(picked))
    else:
        # SQLite has one writer at a time: one statement that picks and takes.
        take = take.where(Event.id.in_(pick.scalar_subquery()), ready)
    stmt = take.returning(Event).execution_options(synchronize_session=False, populate_existing=True)
    return sorted((await session.execute(stmt)).scalars().all(), key=lambda e: e.id or 0)


async def finish(session: AsyncSession, event: Event, outcome: Outcome) -> None:
    """Record the outcome on the event and its open attempt; drop the password once it cannot be needed."""
    await finish_all(session, [(event, outcome)])


async def finish_all(session: AsyncSession, items: Sequence[tuple[Event, Outcome]]) -> None:
    """``finish`` for a batch, in set-wise statements: the events in one executemany (two when only some carry a
    result), the newest open attempt of each in another. The loaded events show the new values; the caller commits.
    """
    if not items:
        return
    now = utcnow()
    events, attempts = Event.__table__, Attempt.__table__  # type: ignore[attr-defined]
    rows: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for event, outcome in items:
        values = {
            "status": outcome.status,
            "last_error": outcome.error,
            "next_attempt_at": outcome.next_attempt_at,
            "lease_until": None,
            "updated_at": now,
        }
        if outcome.result is not None:
            values["result"] = outcome.result
        if outcome.status in (EventStatus.done, EventStatus.ignored):
            values["secret"] = None
        for key, value in values.items():
            # Shown on the loaded object without making it dirty: the statements below write it.
            set_committed_value(event, key, value)
        rows[outcome.result is not None].append(
            {
                "b_id": event.id,
                "b_status": outcome.status,
                "b_error": outcome.error,
                "b_next": outcome.next_attempt_at,
                "b_drop": outcome.status in (EventStatus.done, EventStatus.ignored),
                "b_result": outcome.result,
            }
        )
    common = {
        "status": bindparam("b_status"),
        "last_error": bindparam("b_error"),
        "next_attempt_at": bindparam("b_next", type_=events.c.next_attempt_at.type),
        "lease_until": None,
        "updated_at": now,
        "secret": case((bindparam("b_drop"), None), else_=events.c.secret),
    }
    for with_result, params in rows.items():
        if not params:
            continue
        values = {**common, "result": bindparam("b_result", type_=events.c.result.type)} if with_result else common
        if not with_result:
            for p in params:
                del p["b_result"]
        await session.execute(update(events).where(events.c.id == bindparam("b_id")).values(**values), params)
    newest_open = (
        select(func.max(attempts.c.id))
        .where(attempts.c.event_id == bindparam("b_id"), attempts.c.finished_at.is_(None))
        .scalar_subquery()
    )
    await session.execute(
        update(attempts)
        .where(attempts.c.id == newest_open)
        .values(finished_at=now, outcome=bindparam("b_status"), error=bindparam("b_error")),
        [{"b_id": e.id, "b_status": o.status, "b_error": o.error} for e, o in items],
    )


async def _move(session: AsyncSession, ids: Sequence[int], frm: EventStatus, to: EventStatus) -> None:
    if ids:
        await session.execute(
            update(Event)
            .where(Event.id.in_(list(ids)), Event.status == frm)
            .values(status=to, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )


async def unqueue(session: AsyncSession, ids: Sequence[int]) -> None:
    """Events stored as queued whose enqueue failed (Redis down): the sweeper will queue them."""
    await _move(session, ids, EventStatus.queued, EventStatus.accepted)


async def mark_queued(session: AsyncSession, ids: Sequence[int]) -> None:
    """Accepted events whose job is now in the queue."""
    await _move(session, ids, EventStatus.accepted, EventStatus.queued)


async def request_internal(session: AsyncSession, *, kind: str, subject: str, payload: dict[str, Any]) -> Event | None:
    """Add work of our own (e.g. "make this course") unless the same kind is already open for the subject."""
    open_one = (
        await session.execute(
            select(Event.id).where(Event.subject == subject, Event.kind == kind, Event.status.in_(OPEN_STATUSES))
        )
    ).first()
    if open_one is not None:
        return None
    # A key of its own (never a repeat): a plain insert, in the caller's transaction.
    event = Event(
        **_row(
            Delivery(
                source="internal",
                kind=kind,
                dedupe_key=f"{kind}:{subject}:{uuid.uuid4().hex}",
                body_hash="-",
                payload=payload,
                subject=subject,
            ),
            utcnow(),
        )
    )
    session.add(event)
    await session.flush()
    return event
