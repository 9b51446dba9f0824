"""Thin tasks: claim events, hand them to the rules in app.sync, record outcomes, schedule retries."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.coursesales.errors import CourseSalesAuthError, CourseSalesError
from app.db import inbox, leases
from app.db.inbox import Outcome
from app.db.models import Event, EventStatus
from app.db.types import utcnow
from app.jobs.retry import next_attempt
from app.metrics import EVENTS_FINISHED, JOB_SECONDS
from app.moodle.errors import MoodleAuthError, MoodleError
from app.notify.alerts import raise_alert
from app.runtime import Runtime
from app.sync import operations
from app.sync.completions import CompletionSync
from app.sync.course_sync import Catalogue, CourseProblem, CourseSync
from app.sync.new_enrolments import NewEnrolmentSync
from app.sync.registrations import RegistrationSync
from app.sync.users import UserSync

log = structlog.get_logger(__name__)

# A job drains what is ready of its kinds in batches, then stops: the rest waits for its own jobs.
MAX_ROUNDS = 20
# A registration whose course is being made looks again after this long.
COURSE_WAIT = timedelta(seconds=3)

Runner = Callable[[Runtime, AsyncSession, list[Event]], Awaitable[dict[int, Outcome]]]


async def _run_people(rt: Runtime, session: AsyncSession, events: list[Event]) -> dict[int, Outcome]:
    """Contacts, registrations and cancellations of one batch: users first, then enrolments in array calls."""
    with_contacts = [e for e in events if e.kind in ("contact.upserted", "registration.registered")]
    users = UserSync(session=session, moodle=rt.moodle, vault=rt.vault, rules=rt.settings.users)
    outcomes = await users.run(with_contacts) if with_contacts else {}
    regs = RegistrationSync(session=session, moodle=rt.moodle, settings=rt.settings)
    ready = [e for e in events if e.kind == "registration.registered" and outcomes[e.id].status == EventStatus.done]  # type: ignore[index]
    user_ids = {e.id: int(outcomes[e.id].result["moodle_user_id"]) for e in ready}  # type: ignore[index]
    outcomes.update(await regs.registered(ready, user_ids))  # type: ignore[arg-type]
    outcomes.update(await regs.cancelled([e for e in events if e.kind == "registration.cancelled"]))
    for cdid in sorted(regs.pending.course_dates):
        await request_course(session, cdid)
    for outcome in outcomes.values():
        if outcome.status == EventStatus.retrying and outcome.next_attempt_at is None:
            outcome.next_attempt_at = utcnow() + COURSE_WAIT
    return outcomes  # type: ignore[return-value]


async def _run_courses(rt: Runtime, session: AsyncSession, events: list[Event]) -> dict[int, Outcome]:
    """One course date at a time under its lease: never two creations or duplications for one course date."""
    outcomes: dict[int, Outcome] = {}
    catalogue = Catalogue(rt.coursesales, rt.settings.courses)
    owner = uuid.uuid4().hex
    for event in events:
        cdid = int((event.payload or {})["course_date_id"])
        name = f"course_date:{cdid}"
        if not await leases.acquire(session, name, owner, rt.settings.moodle.duplicate_timeout_seconds + 60):
            outcomes[event.id] = Outcome(
                EventStatus.retrying, f"course date {cdid} is being worked on", next_attempt_at=utcnow() + COURSE_WAIT
            )  # type: ignore[index]
            continue
        sync = CourseSync(
            session=session,
            moodle=rt.moodle,
            coursesales=rt.coursesales,
            settings=rt.settings.courses,
            catalogue=catalogue,
        )
        try:
            result = await sync.ensure(cdid, refresh=event.kind == "course_date.changed")
        except CourseProblem as exc:
            outcomes[event.id] = Outcome(EventStatus.failed, str(exc), alert=exc.cause)  # type: ignore[index]
        else:
            outcomes[event.id] = Outcome(  # type: ignore[index]
                EventStatus.done,
                result={"moodle_course_id": result.moodle_course_id, "action": result.action, "note": result.reason},
            )
        finally:
            await leases.release(session, name, owner)
    return outcomes


async def _run_completions(rt: Runtime, session: AsyncSession, events: list[Event]) -> dict[int, Outcome]:
    """Completions from Moodle's events and from the reconcile's pull, each through the same once-only guard."""
    sync = CompletionSync(sessions=rt.sessions, moodle=rt.moodle, coursesales=rt.coursesales, settings=rt.settings)
    gate = asyncio.Semaphore(rt.settings.moodle.max_in_flight * 2)

    async def one(event: Event) -> Outcome:
        # Each completion has its own guard row and sessions, so they run side by side (latency matters).
        async with gate:
            try:
                return await sync.handle(event)
            except (MoodleError, CourseSalesError) as exc:
                return _outcome_for(rt, event, exc)

    results = await asyncio.gather(*(one(e) for e in events))
    return {e.id: o for e, o in zip(events, results, strict=True)}  # type: ignore[misc]


async def _run_new_enrolments(rt: Runtime, session: AsyncSession, events: list[Event]) -> dict[int, Outcome]:
    if "token_user_id" not in rt.extra:
        rt.extra["token_user_id"] = int((await rt.moodle.site_info())["userid"])
    outcomes: dict[int, Outcome] = {}
    for event in events:
        sync = NewEnrolmentSync(
            session=session,
            moodle=rt.moodle,
            coursesales=rt.coursesales,
            settings=rt.settings,
            token_user_id=rt.extra["token_user_id"],
        )
        try:
            outcomes[event.id] = await sync.handle(event)  # type: ignore[index]
        except (MoodleError, CourseSalesError) as exc:
            outcomes[event.id] = _outcome_for(rt, event, exc)  # type: ignore[index]
    return outcomes


# kind -> runner; kinds sharing a runner are claimed together and batched.
HANDLERS: dict[str, Runner] = {
    "contact.upserted": _run_people,
    "registration.registered": _run_people,
    "registration.cancelled": _run_people,
    "course_date.changed": _run_courses,
    "course.sync": _run_courses,
    "moodle.course_completed": _run_completions,
    "completion.pull": _run_completions,
    "moodle.user_enrolment_created": _run_new_enrolments,
}


async def request_course(session: AsyncSession, course_date_id: int) -> Event | None:
    """Ask for the course of a course date to be made, unless that is already on its way."""
    return await inbox.request_internal(
        session, kind="course.sync", subject=f"course_date:{course_date_id}", payload={"course_date_id": course_date_id}
    )


async def process_event(ctx: dict[str, Any], event_id: int) -> str:
    """arq entry point."""
    return await run_event(ctx["runtime"], event_id)


async def run_event(rt: Runtime, event_id: int) -> str:
    """Process the event and whatever else of its kinds is ready, in batches."""
    async with rt.sessions() as s:
        event = await s.get(Event, event_id)
        if event is None:
            return "missing"
        kind = event.kind
    if not rt.settings.moodle.configured:
        # Kept in the inbox untouched: the sweeper queues it again once Moodle is configured.
        log.warning("jobs.waiting.moodle_not_configured", event_id=event_id)
        return "waiting: Moodle is not configured"
    async with rt.sessions() as s:
        if await operations.paused(s) is not None:
            # Kept queued: the sweeper queues it again after a resume.
            return "paused"
    runner = HANDLERS.get(kind)
    if runner is None:
        await _fail_unknown(rt, event_id, kind)
        return "unknown-kind"
    kinds = [k for k, r in HANDLERS.items() if r is runner]
    total = 0
    # The job stops draining well before its own timeout (the lease): the rest waits for its own jobs.
    budget = time.monotonic() + rt.settings.jobs.lease_seconds / 2
    for _ in range(MAX_ROUNDS):
        n = await _round(rt, runner, kinds)
        total += n
        if n == 0 or time.monotonic() > budget:
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
        structlog.contextvars.bind_contextvars(event_ids=ids)
        log.info("jobs.batch.start", event_ids=ids)
        started = time.perf_counter()
        try:
            outcomes = await runner(rt, s, claimed)
        except (MoodleError, CourseSalesError) as exc:
            await s.rollback()
            claimed = await _reload(s, ids)  # type: ignore[arg-type]
            outcomes = {e.id: _outcome_for(rt, e, exc) for e in claimed}  # type: ignore[misc]
        except IntegrityError as exc:
            # Another job recorded the same link a moment ago: run the batch again shortly, against the new state.
            await s.rollback()
            claimed = await _reload(s, ids)  # type: ignore[arg-type]
            why = f"a concurrent job changed the same records ({type(exc.orig).__name__}); retrying"
            outcomes = {
                e.id: Outcome(EventStatus.retrying, why, next_attempt_at=utcnow() + COURSE_WAIT) for e in claimed
            }  # type: ignore[misc]
        for e in claimed:
            outcome = outcomes[e.id]  # type: ignore[index]
            await inbox.finish(s, e, outcome)
            if outcome.status in (EventStatus.failed, EventStatus.needs_review):
                await raise_alert(
                    s,
                    cause=outcome.alert or f"event.{outcome.status}",
                    message=f"event {e.id} ({e.kind}): {outcome.error}",
                    fix=outcome.fix or f"see GET /api/events/{e.id}; fix the cause, then replay or resolve it",
                    event_id=e.id,
                )
        await s.commit()
        follow = [(e.id, e.attempts, e.kind, e.next_attempt_at) for e in claimed if e.status == EventStatus.retrying]
        JOB_SECONDS.labels(claimed[0].kind).observe(time.perf_counter() - started)
        for e in claimed:
            EVENTS_FINISHED.labels(e.kind, e.status).inc()
            log.info("jobs.event.finished", event_id=e.id, status=e.status, error=e.last_error)
    structlog.contextvars.unbind_contextvars("event_ids")
    if rt.queue is not None:
        for event_id, attempts, kind, at in follow:
            await rt.queue.enqueue_event(event_id, attempts, kind=kind, defer_until=at)  # type: ignore[arg-type]
    await enqueue_internal(rt)
    return len(ids)


async def enqueue_internal(rt: Runtime) -> None:
    """Queue the internal events a job asked for (a course to make, a completion found); else the sweeper will."""
    if rt.queue is None:
        return
    async with rt.sessions() as s:
        rows = (
            await s.execute(
                select(Event.id, Event.kind).where(Event.status == EventStatus.accepted, Event.source == "internal")
            )
        ).all()
    queued = await rt.queue.enqueue_events([(r.id, 0, r.kind) for r in rows])
    if queued:
        async with rt.sessions() as s:
            await inbox.mark_queued(s, queued)
            await s.commit()


async def _reload(s: AsyncSession, ids: list[int]) -> list[Event]:
    rows = await s.execute(select(Event).where(Event.id.in_(ids)).execution_options(populate_existing=True))
    return list(rows.scalars())


def _outcome_for(rt: Runtime, event: Event, exc: Exception) -> Outcome:
    """A failure of the whole call: retry if transient and within the horizon, else fail with the reason."""
    upstream = "CourseSales" if isinstance(exc, CourseSalesError) else "Moodle"
    if getattr(exc, "transient", False):
        at = next_attempt(
            event.created_at, utcnow(), event.attempts, rt.settings.jobs.retry_horizon_hours,
            retry_after=getattr(exc, "retry_after", None),
        )  # fmt: skip
        if at is not None:
            return Outcome(EventStatus.retrying, f"{upstream} unavailable, will retry: {exc}", next_attempt_at=at)
        return Outcome(EventStatus.failed, f"gave up after {event.attempts} attempts: {exc}")
    if isinstance(exc, MoodleAuthError):
        return Outcome(
            EventStatus.failed,
            f"Moodle refused our token or function ({exc}); run `moodle-sync check`",
            alert="moodle.token",
            fix="check SYNC_MOODLE__TOKEN and the functions of its external service (`moodle-sync check`), then replay",
        )
    if isinstance(exc, CourseSalesAuthError):
        return Outcome(
            EventStatus.failed,
            f"CourseSales refused our login ({exc})",
            alert="coursesales.login",
            fix="check SYNC_COURSESALES__USERNAME / __PASSWORD (an active Soap login with a password), then replay",
        )
    return Outcome(EventStatus.failed, f"{upstream} refused the call: {exc}")


async def _fail_unknown(rt: Runtime, event_id: int, kind: str) -> None:
    async with rt.sessions() as s:
        claimed = await inbox.claim(s, kinds=[kind], limit=1, lease_seconds=60, ids=[event_id])
        for e in claimed:
            await inbox.finish(s, e, Outcome(EventStatus.failed, f"no handler for event kind {kind!r}"))
        await s.commit()
