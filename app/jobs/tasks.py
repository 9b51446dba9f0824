"""Thin tasks: claim events, hand them to the rules in app.sync, record outcomes, schedule retries."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.coursesales.errors import CourseSalesAuthError, CourseSalesError
from app.db import claim, inbox, leases
from app.db.inbox import Outcome
from app.db.models import OPEN_STATUSES, Event, EventStatus
from app.db.types import utcnow
from app.jobs.retry import next_attempt
from app.metrics import EVENTS_FINISHED, JOB_SECONDS
from app.moodle.errors import MoodleAuthError, MoodleError
from app.notify.alerts import raise_alert
from app.runtime import Runtime
from app.sync import operations
from app.sync.completions import CompletionSync
from app.sync.course_sync import Catalogue, CourseProblem, CourseResult, CourseSync
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
    """Contacts, registrations and cancellations of one batch: courses checked, users settled, then enrolments in
    array calls. A registration whose course is not there yet waits without touching Moodle."""
    regs = RegistrationSync(session=session, moodle=rt.moodle, settings=rt.settings)
    registered = [e for e in events if e.kind == "registration.registered"]
    outcomes = await regs.hold(registered)
    with_contacts = [
        e
        for e in events
        if e.kind == "contact.upserted" or (e.kind == "registration.registered" and e.id not in outcomes)
    ]
    users = UserSync(session=session, moodle=rt.moodle, vault=rt.vault, rules=rt.settings.users)
    if with_contacts:
        outcomes.update(await users.run(with_contacts))
    user_ids = {e.id: uid for e in registered if (uid := _moodle_user_id(outcomes[e.id])) is not None}  # type: ignore[index]
    ready = [e for e in registered if e.id in user_ids]
    outcomes.update(await regs.registered(ready, user_ids, unverified=users.unverified))  # type: ignore[arg-type]
    outcomes.update(await regs.cancelled([e for e in events if e.kind == "registration.cancelled"]))
    for cdid in sorted(regs.pending.course_dates):
        await request_course(session, cdid)
    for outcome in outcomes.values():
        if outcome.status == EventStatus.retrying and outcome.next_attempt_at is None:
            outcome.next_attempt_at = utcnow() + COURSE_WAIT
    return outcomes


def _moodle_user_id(outcome: Outcome) -> int | None:
    """The Moodle user a settled contact has (none when it was skipped, failed or is held back)."""
    if outcome.status != EventStatus.done or "moodle_user_id" not in (outcome.result or {}):
        return None
    return int(outcome.result["moodle_user_id"])  # type: ignore[index]


async def _run_courses(rt: Runtime, session: AsyncSession, events: list[Event]) -> dict[int, Outcome]:
    """The batch's course dates under their leases (never two creations or duplications for one course date),
    ensured together: one CourseSales read, new courses in one array call."""
    outcomes: dict[int, Outcome] = {}
    by_date: dict[int, list[Event]] = {}
    for event in events:
        by_date.setdefault(int((event.payload or {})["course_date_id"]), []).append(event)
    owner = uuid.uuid4().hex
    ttl = rt.settings.moodle.duplicate_timeout_seconds + 60
    wanted: dict[int, bool] = {}
    for cdid in sorted(by_date):  # one order for every job: two jobs never wait on each other's leases in a cycle
        if await leases.acquire(session, _course_lease(cdid), owner, ttl):
            wanted[cdid] = any(e.kind == "course_date.changed" for e in by_date[cdid])
            continue
        for event in by_date[cdid]:
            outcomes[event.id] = Outcome(  # type: ignore[index]
                EventStatus.retrying, f"course date {cdid} is being worked on", next_attempt_at=utcnow() + COURSE_WAIT
            )
    sync = CourseSync(
        session=session,
        moodle=rt.moodle,
        coursesales=rt.coursesales,
        settings=rt.settings.courses,
        catalogue=Catalogue(rt.coursesales, rt.settings.courses),
    )
    try:
        results = await sync.ensure_many(wanted) if wanted else {}
    finally:
        for cdid in wanted:
            await leases.release(session, _course_lease(cdid), owner)
    for cdid, result in results.items():
        for event in by_date[cdid]:
            outcomes[event.id] = _course_outcome(result)  # type: ignore[index]
    return outcomes


def _course_lease(course_date_id: int) -> str:
    return f"course_date:{course_date_id}"


def _course_outcome(result: CourseResult | CourseProblem) -> Outcome:
    if isinstance(result, CourseProblem):
        return Outcome(EventStatus.failed, str(result), alert=result.cause)
    return Outcome(
        EventStatus.done,
        result={"moodle_course_id": result.moodle_course_id, "action": result.action, "note": result.reason},
    )


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


# Runners whose Moodle calls take arrays: a round waits (up to LINGER, in LINGER_STEP steps) while a burst still
# arrives, so that one array call carries a full batch rather than whatever came in the last few milliseconds.
GATHERED: frozenset[Runner] = frozenset({_run_people, _run_courses})
LINGER = 1.0
LINGER_STEP = 0.1

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
        settled = _settled_elsewhere(event)
    if settled is not None:
        # Another job's round took it (a round drains a batch): this job's work is done, at the cost of one read.
        return settled
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
        n = await _round(rt, runner, kinds, own=event_id)
        total += n
        if n == 0 or time.monotonic() > budget:
            break
    return f"processed {total}"


def _settled_elsewhere(event: Event) -> str | None:
    """Why this event's own job has nothing to do: it was finished, or is running under a live lease (if its
    holder dies, the lease runs out and the sweeper queues it again). None: it may be ready, so claim."""
    if event.status not in OPEN_STATUSES:
        return f"already {event.status}"
    if event.status == EventStatus.running and event.lease_until is not None and event.lease_until > utcnow():
        return "running in another job"
    return None


async def _round(rt: Runtime, runner: Runner, kinds: list[str], *, own: int | None = None) -> int:
    """Claim a batch, run it, record its outcomes. ``own``: the event of the job running this round, whose job
    arq finishes; the waiting jobs of the rest of the batch are taken out of the queue."""
    async with rt.sessions() as s:
        claimed = await _claim(rt, s, runner, kinds)
        if not claimed:
            return 0
        if rt.queue is not None:
            await rt.queue.drop_events([(e.id, e.attempts - 1, e.kind) for e in claimed if e.id != own])  # type: ignore[misc]
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
        await _record_outcomes(s, claimed, outcomes)
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


async def _record_outcomes(s: AsyncSession, claimed: list[Event], outcomes: dict[int, Outcome]) -> None:
    """Finish the events (their attempts read in one query) and alert on what a person must fix; the caller commits."""
    await inbox.finish_all(s, [(e, outcomes[e.id]) for e in claimed])  # type: ignore[index]
    for e in claimed:
        outcome = outcomes[e.id]  # type: ignore[index]
        if outcome.status in (EventStatus.failed, EventStatus.needs_review):
            await raise_alert(
                s,
                cause=outcome.alert or f"event.{outcome.status}",
                message=f"event {e.id} ({e.kind}): {outcome.error}",
                fix=outcome.fix or f"see GET /api/events/{e.id}; fix the cause, then replay or resolve it",
                event_id=e.id,
            )


async def _claim(rt: Runtime, s: AsyncSession, runner: Runner, kinds: list[str]) -> list[Event]:
    """Claim (and commit) a batch. For runners whose Moodle calls take arrays, one round per process at a time
    gathers its batch, and waits for a burst still arriving to fill it: concurrent rounds would split it."""
    limit = rt.settings.moodle.max_batch
    if runner not in GATHERED:
        return await _claim_now(rt, s, kinds, limit)
    async with rt.extra.setdefault(f"gathering:{runner.__name__}", asyncio.Lock()):
        await _await_batch(s, kinds, limit)
        return await _claim_now(rt, s, kinds, limit)


async def _claim_now(rt: Runtime, s: AsyncSession, kinds: list[str], limit: int) -> list[Event]:
    claimed = await claim.claim(s, kinds=kinds, limit=limit, lease_seconds=rt.settings.jobs.lease_seconds)
    await s.commit()
    return claimed


async def _await_batch(s: AsyncSession, kinds: list[str], limit: int) -> None:
    """Return at once when nothing or a full batch waits; else as soon as a step brings nothing new, or at LINGER."""
    deadline = time.monotonic() + LINGER
    seen = await _arrived(s, kinds, limit)
    while 0 < seen < limit and time.monotonic() < deadline:
        await asyncio.sleep(LINGER_STEP)
        before, seen = seen, await _arrived(s, kinds, limit)
        if seen <= before:
            return


async def _arrived(s: AsyncSession, kinds: list[str], limit: int) -> int:
    """Events of these kinds waiting for their first run, counted up to ``limit``."""
    waiting = (
        select(Event.id)
        .where(Event.kind.in_(kinds), Event.status.in_([EventStatus.accepted, EventStatus.queued]))
        .limit(limit)
        .subquery()
    )
    return int((await s.execute(select(func.count()).select_from(waiting))).scalar_one())


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
        claimed = await claim.claim(s, kinds=[kind], limit=1, lease_seconds=60, ids=[event_id])
        for e in claimed:
            await inbox.finish(s, e, Outcome(EventStatus.failed, f"no handler for event kind {kind!r}"))
        await s.commit()
