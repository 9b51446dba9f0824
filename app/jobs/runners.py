"""The runners: what a batch of claimed events of one family does (the rules are in app.sync).

Each family of app.events.registry has one runner here, registered with ``@runs(Family.x)``. A runner returns
what it wants done as a value (``Ran``: an outcome per event, internal events to ask for); the round
(app.jobs.tasks) alone records them, commits, and then enqueues.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.coursesales.errors import CourseSalesAuthError, CourseSalesError
from app.db import leases
from app.db.inbox import Outcome
from app.db.models import Event, EventStatus
from app.db.types import utcnow
from app.events.registry import EventKind, Family
from app.jobs.retry import next_attempt
from app.moodle.errors import MoodleAuthError, MoodleError
from app.runtime import Runtime
from app.sync.completions import CompletionSync
from app.sync.course_dates import Catalogue
from app.sync.course_sync import CourseProblem, CourseResult, CourseSync
from app.sync.intake import Request, course_request
from app.sync.new_enrolments import POSTING, NewEnrolmentSync
from app.sync.registrations import RegistrationSync
from app.sync.users import UserSync
from app.upstream import COURSESALES, MOODLE, UpstreamError

# A registration whose course is being made looks again after this long.
COURSE_WAIT = timedelta(seconds=3)


@dataclass
class Ran:
    """What a runner decided for its batch."""

    outcomes: dict[int, Outcome]
    requests: list[Request] = field(default_factory=list)  # internal events to add (a course to make)


Runner = Callable[[Runtime, AsyncSession, list[Event]], Awaitable[Ran]]

RUNNERS: dict[Family, Runner] = {}

# Families whose Moodle calls take arrays: a round waits while a burst still arrives (app.jobs.gathering, LINGER), so
# that one array call carries a full batch rather than whatever came in the last few milliseconds.
GATHERED = frozenset({Family.people, Family.courses})


def runs(family: Family) -> Callable[[Runner], Runner]:
    """Register the runner of a family."""

    def register(runner: Runner) -> Runner:
        RUNNERS[family] = runner
        return runner

    return register


@runs(Family.people)
async def _run_people(rt: Runtime, session: AsyncSession, events: list[Event]) -> Ran:
    """Contacts, registrations and cancellations of one batch: courses checked, users settled, then enrolments in
    array calls. A registration whose course is not there yet waits without touching Moodle."""
    regs = RegistrationSync(session=session, moodle=rt.moodle, settings=rt.settings)
    registered = [e for e in events if e.kind == EventKind.registration_registered]
    outcomes = await regs.hold(registered)
    with_contacts = [
        e
        for e in events
        if e.kind == EventKind.contact_upserted
        or (e.kind == EventKind.registration_registered and e.id not in outcomes)
    ]
    users = UserSync(session=session, moodle=rt.moodle, vault=rt.vault, rules=rt.settings.users)
    if with_contacts:
        outcomes.update(await users.run(with_contacts))
    user_ids = {e.id: uid for e in registered if (uid := _moodle_user_id(outcomes[e.id])) is not None}
    ready = [e for e in registered if e.id in user_ids]
    outcomes.update(await regs.registered(ready, user_ids, unverified=users.unverified))
    outcomes.update(await regs.cancelled([e for e in events if e.kind == EventKind.registration_cancelled]))
    for outcome in outcomes.values():
        if outcome.status == EventStatus.retrying and outcome.next_attempt_at is None:
            outcome.next_attempt_at = utcnow() + COURSE_WAIT
    return Ran(outcomes, [course_request(cdid) for cdid in sorted(regs.pending.course_dates)])


def _moodle_user_id(outcome: Outcome) -> int | None:
    """The Moodle user a settled contact has (none when it was skipped, failed or is held back)."""
    if outcome.status != EventStatus.done or outcome.result is None or "moodle_user_id" not in outcome.result:
        return None
    return int(outcome.result["moodle_user_id"])


@runs(Family.courses)
async def _run_courses(rt: Runtime, session: AsyncSession, events: list[Event]) -> Ran:
    """The batch's course dates under their leases (never two creations or duplications for one course date),
    ensured together: one CourseSales read, new courses in one array call."""
    outcomes: dict[int, Outcome] = {}
    by_date: dict[int, list[Event]] = {}
    for event in events:
        by_date.setdefault(int((event.payload or {})["course_date_id"]), []).append(event)
    owner = uuid.uuid4().hex
    ttl = rt.settings.moodle.duplicate_timeout_seconds + 60
    wanted: dict[int, bool] = {}
    # One order for every job (two jobs never wait on each other's leases in a cycle), all in one statement.
    held = await leases.acquire_many(session, [_course_lease(cdid) for cdid in sorted(by_date)], owner, ttl)
    for cdid in sorted(by_date):
        if _course_lease(cdid) in held:
            wanted[cdid] = any(e.kind == EventKind.course_date_changed for e in by_date[cdid])
            continue
        for event in by_date[cdid]:
            outcomes[event.id] = Outcome(
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
        await leases.release_many(session, [_course_lease(cdid) for cdid in wanted], owner)
    for cdid, result in results.items():
        for event in by_date[cdid]:
            outcomes[event.id] = _course_outcome(result)
    return Ran(outcomes)


def _course_lease(course_date_id: int) -> str:
    return f"course_date:{course_date_id}"


def _course_outcome(result: CourseResult | CourseProblem) -> Outcome:
    if isinstance(result, CourseProblem):
        return Outcome(EventStatus.failed, str(result), alert=result.cause)
    return Outcome(
        EventStatus.done,
        result={"moodle_course_id": result.moodle_course_id, "action": result.action, "note": result.reason},
    )


@runs(Family.completions)
async def _run_completions(rt: Runtime, session: AsyncSession, events: list[Event]) -> Ran:
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
    return Ran({e.id: o for e, o in zip(events, results, strict=True)})


@runs(Family.new_enrolments)
async def _run_new_enrolments(rt: Runtime, session: AsyncSession, events: list[Event]) -> Ran:
    """One enrolment at a time: its registration's intent is committed before CourseSales is called."""
    if rt.token_user_id is None:
        rt.token_user_id = int((await rt.moodle.site_info())["userid"])
    sync = NewEnrolmentSync(
        session=session,
        moodle=rt.moodle,
        coursesales=rt.coursesales,
        settings=rt.settings,
        token_user_id=rt.token_user_id,
    )
    outcomes: dict[int, Outcome] = {}
    for event in events:
        try:
            outcomes[event.id] = await _new_enrolment(session, sync, event)
        except (MoodleError, CourseSalesError) as exc:
            outcomes[event.id] = outcome_for_failure(rt, event, exc)
    return Ran(outcomes)


async def _new_enrolment(session: AsyncSession, sync: NewEnrolmentSync, event: Event) -> Outcome:
    plan = await sync.plan(event)
    if isinstance(plan, Outcome):
        return plan
    event.result = POSTING  # a crash during the call must not post the registration twice
    await session.commit()
    try:
        return await sync.post(event, plan)
    except CourseSalesError:
        event.result = None  # it never reached CourseSales: the retry posts it
        await session.commit()
        raise


# A refused token or login, by upstream: what the event says, the alert's cause, what a person does.
REFUSED_CREDENTIALS = {
    MOODLE: (
        "Moodle refused our token or function ({exc}); run `moodle-sync check`",
        "moodle.token",
        "check SYNC_MOODLE__TOKEN and the functions of its external service (`moodle-sync check`), then replay",
    ),
    COURSESALES: (
        "CourseSales refused our login ({exc})",
        "coursesales.login",
        "check SYNC_COURSESALES__USERNAME / __PASSWORD (an active Soap login with a password), then replay",
    ),
}


def outcome_for_failure(rt: Runtime, event: Event, exc: UpstreamError) -> Outcome:
    """A failure of the whole call: retry if transient and within the horizon, else fail with the reason."""
    upstream = "CourseSales" if isinstance(exc, CourseSalesError) else "Moodle"
    if exc.transient:
        at = next_attempt(
            event.created_at, utcnow(), event.attempts, rt.settings.jobs.retry_horizon_hours,
            retry_after=exc.retry_after,
        )  # fmt: skip
        if at is not None:
            return Outcome(EventStatus.retrying, f"{upstream} unavailable, will retry: {exc}", next_attempt_at=at)
        return Outcome(EventStatus.failed, f"gave up after {event.attempts} attempts: {exc}")
    if isinstance(exc, (MoodleAuthError, CourseSalesAuthError)):
        says, alert, fix = REFUSED_CREDENTIALS[exc.upstream]
        return Outcome(EventStatus.failed, says.format(exc=exc), alert=alert, fix=fix)
    return Outcome(EventStatus.failed, f"{upstream} refused the call: {exc}")
