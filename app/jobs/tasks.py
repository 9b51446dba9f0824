"""Thin tasks: claim events, hand them to the rules in app.sync, record outcomes, schedule retries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import inbox
from app.db.inbox import Outcome
from app.db.models import Event, EventStatus
from app.db.types import utcnow
from app.jobs.retry import next_attempt
from app.moodle.errors import MoodleAuthError, MoodleError, MoodleTransientError
from app.runtime import Runtime
from app.sync.users import UserSync

log = structlog.get_logger(__name__)

# A job drains what is ready of its kind in batches, then stops: the rest waits for its own jobs.
MAX_ROUNDS = 20

Runner = Callable[[Runtime, AsyncSession, list[Event]], Awaitable[dict[int, Outcome]]]


async def _run_users(rt: Runtime, session: AsyncSession, events: list[Event]) -> dict[int, Outcome]:
    sync = UserSync(session=session, moodle=rt.moodle, vault=rt.vault, rules=rt.settings.users)
    return await sync.run(events)


# kind -> runner; kinds sharing a runner are claimed together and batched.
HANDLERS: dict[str, Runner] = {"contact.upserted": _run_users}


async def process_event(ctx: dict[str, Any], event_id: int) -> str:
    """arq entry point."""
    return await run_event(ctx["runtime"], event_id)


async def run_event(rt: Runtime, event_id: int) -> str:
    """Process the event and whatever else of its kind is ready, in batches."""
    async with rt.sessions() as s:
        event = await s.get(Event, event_id)
        if event is None:
            return "missing"
        kind = event.kind
    if not rt.settings.moodle.configured:
        # Kept in the inbox untouched: the sweeper queues it again once Moodle is configured.
        log.warning("jobs.waiting.moodle_not_configured", event_id=event_id)
        return "waiting: Moodle is not configured"
    runner = HANDLERS.get(kind)
    if runner is None:
        await _fail_unknown(rt, event_id, kind)
        return "unknown-kind"
    kinds = [k for k, r in HANDLERS.items() if r is runner]
    total = 0
    for _ in range(MAX_ROUNDS):
        n = await _round(rt, runner, kinds)
        total += n
        if n == 0:
            break
    return f"processed {total}"


async def _round(rt: Runtime, runner: Runner, kinds: list[str]) -> int:
    async with rt.sessions() as s:
        claimed = await inbox.claim(
            s, kinds=kinds, limit=rt.settings.moodle.max_batch, lease_seconds=rt.settings.jobs.lease_seconds
        )
        await s.commit()
        if not claimed:
            return 0
        ids = [e.id for e in claimed]
        log.info("jobs.batch.start", event_ids=ids)
        try:
            outcomes = await runner(rt, s, claimed)
        except MoodleError as exc:
            await s.rollback()
            claimed = await _reload(s, ids)  # type: ignore[arg-type]
            outcomes = {e.id: _outcome_for(rt, e, exc) for e in claimed}  # type: ignore[misc]
        for e in claimed:
            await inbox.finish(s, e, outcomes[e.id])  # type: ignore[index]
        await s.commit()
        retries = [(e.id, e.attempts, e.next_attempt_at) for e in claimed if e.status == EventStatus.retrying]
        for e in claimed:
            log.info("jobs.event.finished", event_id=e.id, status=e.status, error=e.last_error)
    if rt.queue is not None:
        for event_id, attempts, at in retries:
            await rt.queue.enqueue_event(event_id, attempts, defer_until=at)  # type: ignore[arg-type]
    return len(ids)


async def _reload(s: AsyncSession, ids: list[int]) -> list[Event]:
    rows = await s.execute(select(Event).where(Event.id.in_(ids)).execution_options(populate_existing=True))
    return list(rows.scalars())


def _outcome_for(rt: Runtime, event: Event, exc: MoodleError) -> Outcome:
    """A failure of the whole call: retry if transient and within the horizon, else fail with the reason."""
    if isinstance(exc, MoodleTransientError):
        at = next_attempt(
            event.created_at,
            utcnow(),
            event.attempts,
            rt.settings.jobs.retry_horizon_hours,
            retry_after=exc.retry_after,
        )
        if at is not None:
            return Outcome(EventStatus.retrying, f"Moodle unavailable, will retry: {exc}", next_attempt_at=at)
        return Outcome(EventStatus.failed, f"gave up after {event.attempts} attempts: {exc}")
    if isinstance(exc, MoodleAuthError):
        return Outcome(EventStatus.failed, f"Moodle refused our token or function ({exc}); run `moodle-sync check`")
    return Outcome(EventStatus.failed, f"Moodle refused the call: {exc}")


async def _fail_unknown(rt: Runtime, event_id: int, kind: str) -> None:
    async with rt.sessions() as s:
        claimed = await inbox.claim(s, kinds=[kind], limit=1, lease_seconds=60, ids=[event_id])
        for e in claimed:
            await inbox.finish(s, e, Outcome(EventStatus.failed, f"no handler for event kind {kind!r}"))
        await s.commit()
