"""The runners: what a batch of claimed events of one family does, by event kind (the rules are in app.sync)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.coursesales.errors import CourseSalesAuthError, CourseSalesError
from app.db import inbox, leases
from app.db.inbox import Outcome
from app.db.models import Event, EventStatus
from app.db.types import utcnow
from app.jobs.retry import next_attempt
from app.moodle.errors import MoodleAuthError, MoodleError
from app.runtime import Runtime
from app.sync.completions import CompletionSync
from app.sync.course_sync import Catalogue, CourseProblem, CourseResult, CourseSync
from app.sync.new_enrolments import NewEnrolmentSync
from app.sync.registrations import RegistrationSync
from app.sync.users import UserSync

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
                return outcome_for_failure(rt, event, exc)

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
            outcomes[event.id] = outcome_for_failure(rt, event, exc)  # type: ignore[index]
    return outcomes


# Runners whose Moodle calls take arrays: a round waits while a burst still arrives (app.jobs.tasks, LINGER), so
# that one array call carries a full batch rather than whatever came in the last few milliseconds.
GATHERED: frozenset[Runner] = frozenset({_run_people, _run_courses})

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


def outcome_for_failure(rt: Runtime, event: Event, exc: Exception) -> Outcome:
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
