"""The inbox: accept a delivery exactly once, record how each attempt ended (claiming work: app.db.claim)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, and_, bindparam, case, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col

from app.db import arrays
from app.db.dialect import on_postgres
from app.db.models import OPEN_STATUSES, Attempt, Event, EventStatus
from app.db.tenancy import ALL_TENANTS
from app.db.tenants import DEFAULT_TENANT_ID
from app.db.types import utcnow


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
    tenant_id: int = DEFAULT_TENANT_ID  # whose inbox: one group commit takes every tenant's deliveries


def event_row(delivery: Delivery, now: datetime) -> dict[str, Any]:
    return {
        "tenant_id": delivery.tenant_id,
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
    """Insert each delivery unless (tenant, source, dedupe_key) exists, in two statements: one multi-row insert, one look-up
    of the repeats; a repeat with another body gets a BodyMismatch. Every sender's deliveries come in this way,
    through app.db.group_commit.

    Answers in the order given. A delivery id twice in one batch: the first makes the event, the second is its
    repeat (or a BodyMismatch). The caller commits.
    """
    now = utcnow()
    # Core, not the ORM's bulk insert: nothing here needs objects. On PostgreSQL one statement over arrays, not a
    # multi-row VALUES rendered again for each batch's size (BENCHMARKS.md).
    made = (await arrays.insert_rows(session, _EVENTS, [event_row(d, now) for d in deliveries], shape=_new_only)).all()
    fresh = {(r.tenant_id, r.source, r.dedupe_key): r for r in made}
    firsts: set[tuple[int, str, str]] = set()
    repeats: list[Delivery] = []
    for d in deliveries:
        key = (d.tenant_id, d.source, d.dedupe_key)
        if key in fresh and key not in firsts:
            firsts.add(key)
        else:
            repeats.append(d)
    existing = await _existing(session, repeats) if repeats else {}
    out: list[Stored | BodyMismatch] = []
    for d in deliveries:
        key = (d.tenant_id, d.source, d.dedupe_key)
        row = fresh.pop(key, None)
        if row is not None:
            out.append(Stored(row.id, row.status, True))
            continue
        event = existing[key]
        mismatch = event.body_hash != d.body_hash
        out.append(BodyMismatch(event) if mismatch else Stored(event.id, EventStatus(event.status), False))
    return out


def _new_only(stmt: Any) -> Any:
    """A delivery seen before is left as it is; the new ones say what they became."""
    return stmt.on_conflict_do_nothing(index_elements=["tenant_id", "source", "dedupe_key"]).returning(
        col(Event.id), col(Event.tenant_id), col(Event.source), col(Event.dedupe_key), col(Event.status)
    )


async def _existing(session: AsyncSession, deliveries: Sequence[Delivery]) -> dict[tuple[int, str, str], Event]:
    by_source: dict[tuple[int, str], set[str]] = {}
    for d in deliveries:
        by_source.setdefault((d.tenant_id, d.source), set()).add(d.dedupe_key)
    where = or_(
        *(
            and_(col(Event.tenant_id) == tenant, col(Event.source) == src, col(Event.dedupe_key).in_(sorted(keys)))
            for (tenant, src), keys in by_source.items()
        )
    )
    # Each delivery names its tenant: the batch may hold several tenants' (the where says whose).
    statement = select(Event).where(where).execution_options(**ALL_TENANTS)
    return {(e.tenant_id, e.source, e.dedupe_key): e for e in (await session.execute(statement)).scalars()}


async def finish(session: AsyncSession, event: Event, outcome: Outcome) -> None:
    """Record the outcome on the event and its open attempt; drop the password once it cannot be needed."""
    await finish_all(session, [(event, outcome)])


async def finish_all(session: AsyncSession, items: Sequence[tuple[Event, Outcome]]) -> None:
    """``finish`` for a batch, in two statements: the events, then a row for each one's attempt, written once it
    is over (a running attempt is the event itself: started when claimed, at its updated_at). The loaded events
    show the new values without being flushed again; the caller commits."""
    if not items:
        return
    now = utcnow()
    params: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []
    for event, outcome in items:
        attempts.append(
            {
                "tenant_id": event.tenant_id,
                "event_id": event.id,
                "number": event.attempts,
                "started_at": event.updated_at,  # the claim's time, before it is set to now below
                "finished_at": now,
                "outcome": outcome.status,
                "error": outcome.error,
            }
        )
        drop_secret = outcome.status in (EventStatus.done, EventStatus.ignored)
        shown = {
            "status": outcome.status,
            "last_error": outcome.error,
            "next_attempt_at": outcome.next_attempt_at,
            "lease_until": None,
            "updated_at": now,
            "result": event.result if outcome.result is None else outcome.result,
            "secret": None if drop_secret else event.secret,
        }
        for key, value in shown.items():
            set_committed_value(event, key, value)
        params.append(
            {
                "b_id": event.id,
                "b_status": outcome.status,
                "b_error": outcome.error,
                "b_next": outcome.next_attempt_at,
                "b_keep_result": outcome.result is None,
                "b_result": outcome.result,
                "b_drop_secret": drop_secret,
                "b_now": now,
            }
        )
    if on_postgres(session):
        # One statement over arrays: as an executemany, PostgreSQL planned and ran each row on its own (14 s of
        # the database's time in a 30,200-event drain, BENCHMARKS.md).
        await arrays.finish(session, params, now)
    else:
        await session.execute(_FINISH_EVENTS, params)
    await arrays.insert_rows(session, _ATTEMPTS, attempts)


_EVENTS, _ATTEMPTS = Event.metadata.tables["events"], Attempt.metadata.tables["attempts"]
# Built once (a round finishes its batch with these two): every value is a parameter of the executemany.
_FINISH_EVENTS = (
    update(_EVENTS)
    .where(_EVENTS.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        last_error=bindparam("b_error"),
        next_attempt_at=bindparam("b_next", type_=_EVENTS.c.next_attempt_at.type),
        lease_until=None,
        updated_at=bindparam("b_now", type_=_EVENTS.c.updated_at.type),
        # An outcome without a result keeps the one the event has; only done and ignored drop the password.
        result=case(
            (bindparam("b_keep_result"), _EVENTS.c.result), else_=bindparam("b_result", type_=_EVENTS.c.result.type)
        ),
        secret=case((bindparam("b_drop_secret"), None), else_=_EVENTS.c.secret),
    )
)


async def hold(session: AsyncSession, ids: Sequence[int], reason: str) -> None:
    """Give claimed events back untouched: their upstream cannot be used now. The claim's attempt is taken back
    (no attempt and no retry horizon is spent on an outage: it never gets a row); ``waiting_for`` says why. The
    caller commits."""
    await session.execute(
        update(Event)
        .where(col(Event.id).in_(list(ids)), col(Event.status) == EventStatus.running)
        .values(
            status=EventStatus.accepted,
            attempts=col(Event.attempts) - 1,
            lease_until=None,
            waiting_for=reason[:255],
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )


async def mark_waiting(session: AsyncSession, event_id: int, reason: str) -> bool:
    """Record why an open event cannot run yet; True when that is news (the caller logs it once, not every sweep)."""
    reason = reason[:255]
    done = await session.execute(
        update(Event)
        .where(
            col(Event.id) == event_id,
            col(Event.status).in_(OPEN_STATUSES),
            or_(col(Event.waiting_for).is_(None), col(Event.waiting_for) != reason),
        )
        .values(waiting_for=reason)
        .execution_options(synchronize_session=False)
    )
    return bool(cast("CursorResult[Any]", done).rowcount)  # an UPDATE's result counts its rows


async def _move(session: AsyncSession, ids: Sequence[int], frm: EventStatus, to: EventStatus) -> None:
    if ids:
        # By event id, which the caller got from the inbox itself (the group commit's batch holds several tenants').
        await session.execute(
            update(Event)
            .where(col(Event.id).in_(list(ids)), col(Event.status) == frm)
            .values(status=to, updated_at=utcnow())
            .execution_options(synchronize_session=False, **ALL_TENANTS)
        )


async def unqueue(session: AsyncSession, ids: Sequence[int]) -> None:
    """Events stored as queued whose enqueue failed (Redis down): the sweeper will queue them."""
    await _move(session, ids, EventStatus.queued, EventStatus.accepted)


async def mark_queued(session: AsyncSession, ids: Sequence[int]) -> None:
    """Accepted events whose job is now in the queue."""
    await _move(session, ids, EventStatus.accepted, EventStatus.queued)
