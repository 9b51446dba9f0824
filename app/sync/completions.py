"""Moodle course completion -> the CourseSales process step on that learner's Document, at most once.

CourseSales cannot tell whether a step ran, so the step is guarded by a unique (learner, course date) row
written *before* the call: a second event finds it and does nothing, and a call whose outcome is unknown
(sent, then a timeout) leaves the row in ``needs_review`` for a person instead of being repeated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import structlog
from sqlalchemy import CursorResult, bindparam, desc, insert, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.coursesales.api import CourseSalesApi
from app.coursesales.errors import CourseSalesError, CourseSalesTransientError
from app.db.engine import SessionFactory
from app.db.inbox import Outcome
from app.db.models import Completion, CourseLink, Event, EventStatus, Registration, UserLink
from app.db.tenancy import tenant_of
from app.db.types import utcnow
from app.events.registry import EventKind
from app.moodle.client import MoodleClient
from app.moodle.errors import MoodlePermanentError
from app.settings import Settings
from app.sync.tables import table_of

log = structlog.get_logger(__name__)
UNMAPPED_RETRY = timedelta(seconds=60)


@dataclass(frozen=True)
class Target:
    contact_key: str
    course_date_id: int
    document: str


class CompletionSync:
    """Handles one completion event; commits its own guard rows (they must exist before the call)."""

    def __init__(
        self, *, sessions: SessionFactory, moodle: MoodleClient, coursesales: CourseSalesApi, settings: Settings
    ) -> None:
        self.sessions = sessions
        self.moodle = moodle
        self.coursesales = coursesales
        self.settings = settings

    async def handle(self, event: Event) -> Outcome:
        payload = event.payload or {}
        user_id, course_id = int(payload.get("relateduserid") or 0), int(payload.get("courseid") or 0)
        step = self.settings.completion.process_step_id
        if not step:
            return self._fail(
                event, "config.completion", "completion.process_step_id is not set", "set completion.process_step_id"
            )
        target, guard, why = await self._target(user_id, course_id)
        if target is None:
            if utcnow() - event.created_at < timedelta(seconds=self.settings.completion.unmapped_retry_seconds):
                return Outcome(
                    EventStatus.retrying,
                    f"{why}; its links may be on their way",
                    next_attempt_at=utcnow() + UNMAPPED_RETRY,
                )
            return self._fail(
                event,
                "completion.unmapped",
                f"completion of Moodle user {user_id} in course {course_id}: {why}",
                "link the user and the course (or replay once CourseSales has sent them)",
            )
        if guard is not None and guard.status == "done":
            return Outcome(
                EventStatus.done,
                result={"step": "already executed", "by_event": guard.event_id, "document": target.document},
            )
        if guard is not None and guard.status in ("sending", "needs_review"):
            return Outcome(
                EventStatus.needs_review,
                f"an earlier step call for Document {target.document} has an unknown outcome (event {guard.event_id}): check CourseSales, then resolve",
            )
        if self.settings.completion.verify and event.kind == EventKind.moodle_course_completed:
            incomplete = await self._not_complete(user_id, course_id)
            if incomplete:
                return Outcome(EventStatus.done, result={"step": "not run", "why": incomplete})
        return await self._execute(event, target, step, guard)

    async def _target(self, user_id: int, course_id: int) -> tuple[Target | None, Completion | None, str]:
        """The learner's Document for this course and its guard row, in two queries (latency matters here)."""
        async with self.sessions() as s:
            pair = (await s.execute(_LINKS, {"user_id": user_id, "course_id": course_id})).first()
            if pair is None:
                return None, None, await _unlinked(s, user_id, course_id)
            user, course = pair
            key = user.contact_key
            row = (
                await s.execute(_REGISTRATION, {"contact_key": key, "course_date_id": course.course_date_id})
            ).first()
            if row is None:
                why = f"no active registration of {user.username} for course date {course.course_date_id}"
                return None, None, why
            return Target(key, course.course_date_id, row[0]), row[1], ""

    async def _not_complete(self, user_id: int, course_id: int) -> str | None:
        """Why Moodle does not confirm the completion (events can describe a change Moodle rolled back)."""
        try:
            status = await self.moodle.completion_status(course_id=course_id, user_id=user_id)
        except MoodlePermanentError as exc:
            return f"Moodle cannot confirm the completion: {exc}"
        return None if status.get("completed") else "Moodle reports the course as not complete"

    async def _execute(self, event: Event, target: Target, step: int, guard: Completion | None) -> Outcome:
        guard_id = await self._take_guard(event, target, guard)
        if guard_id is None:
            return Outcome(
                EventStatus.done, result={"step": "another event is executing it", "document": target.document}
            )
        try:
            answer = await self.coursesales.execute_step(document_external_id=target.document, step_id=step)
        except CourseSalesTransientError as exc:
            if exc.maybe_sent:
                await self._mark(guard_id, "needs_review", str(exc))
                return Outcome(
                    EventStatus.needs_review,
                    f"process step {step} on Document {target.document}: the call's outcome is unknown ({exc})",
                    fix="check the Document in CourseSales; resolve the event if the step ran, else replay it",
                )
            await self._drop(guard_id)
            raise  # certainly not sent: retried with backoff
        except CourseSalesError as exc:
            await self._mark(guard_id, "failed", str(exc))
            return self._fail(
                event,
                "event.failed",
                f"CourseSales refused process step {step} on Document {target.document}: {exc}",
                "check that the step is on the Document's current process path",
            )
        await self._mark(guard_id, "done", None)
        log.info("coursesales.step.executed", event_id=event.id, document=target.document)
        return Outcome(EventStatus.done, result={"step": step, "document": target.document, "answer": _short(answer)})

    async def _take_guard(self, event: Event, target: Target, guard: Completion | None) -> int | None:
        """Write the guard as sending (new, or taken back from a failed call) and commit it before the call; None:
        another event holds it (it inserted the row first, or took the failed one back first)."""
        now = utcnow()
        async with self.sessions() as s:
            try:
                if guard is None:
                    row = {
                        "tenant_id": tenant_of(s),
                        "contact_key": target.contact_key,
                        "course_date_id": target.course_date_id,
                        "document_external_id": target.document,
                        "status": "sending",
                        "event_id": event.id,
                        "created_at": now,
                        "updated_at": now,
                    }
                    guard_id: int | None = (await s.execute(_NEW_GUARD, row)).scalar_one()
                else:
                    # An UPDATE yields a CursorResult; AsyncSession.execute is typed with the Result base.
                    taken = cast(
                        CursorResult[Any],
                        await s.execute(_RETAKE_GUARD, {"guard_id": guard.id, "by_event": event.id, "at": now}),
                    )
                    guard_id = guard.id if taken.rowcount == 1 else None
                await s.commit()
            except IntegrityError:
                await s.rollback()
                return None
        return guard_id

    async def _mark(self, guard_id: int | None, status: str, error: str | None) -> None:
        async with self.sessions() as s:
            await s.execute(_MARK, {"guard_id": guard_id, "new_status": status, "new_error": error, "at": utcnow()})
            await s.commit()

    async def _drop(self, guard_id: int | None) -> None:
        async with self.sessions() as s:
            await s.delete(await s.get_one(Completion, guard_id))
            await s.commit()

    def _fail(self, event: Event, cause: str, message: str, fix: str) -> Outcome:
        return Outcome(EventStatus.failed, message, alert=cause, fix=fix)


async def _unlinked(s: AsyncSession, user_id: int, course_id: int) -> str:
    """Which of the two links is missing (the rare path: only after the joined lookup found nothing)."""
    user = (await s.execute(select(col(UserLink.id)).where(col(UserLink.moodle_user_id) == user_id))).first()
    if user is None:
        return f"Moodle user {user_id} is not linked to a CourseSales contact"
    return f"Moodle course {course_id} is not linked to a course date"


# Built once: a completion's latency is mostly these statements and its two calls.
_LINKS = (
    select(UserLink, CourseLink)
    .join_from(UserLink, CourseLink, true())  # two single-row look-ups in one round trip
    .where(
        col(UserLink.moodle_user_id) == bindparam("user_id"), col(CourseLink.moodle_course_id) == bindparam("course_id")
    )
)
_REGISTRATION = (
    select(col(Registration.document_external_id), Completion)
    .outerjoin(
        Completion,
        (col(Completion.contact_key) == col(Registration.contact_key))
        & (col(Completion.course_date_id) == col(Registration.course_date_id)),
    )
    .where(
        col(Registration.contact_key) == bindparam("contact_key"),
        col(Registration.course_date_id) == bindparam("course_date_id"),
        col(Registration.status) == "registered",
    )
    .order_by(desc(col(Registration.id)))
    .limit(1)
)
_GUARDS = table_of(Completion)
_NEW_GUARD = insert(_GUARDS).returning(_GUARDS.c.id)
# Only a failed call's guard is taken back, and by one event: a second finds it sending and leaves it.
_RETAKE_GUARD = (
    update(_GUARDS)
    .where(_GUARDS.c.id == bindparam("guard_id"), _GUARDS.c.status == "failed")
    .values(status="sending", event_id=bindparam("by_event"), error=None, updated_at=bindparam("at"))
)
_MARK = (
    update(_GUARDS)
    .where(_GUARDS.c.id == bindparam("guard_id"))
    .values(status=bindparam("new_status"), error=bindparam("new_error"), updated_at=bindparam("at"))
)


def _short(answer: dict[str, Any]) -> dict[str, Any] | str:
    text = str(answer)
    return answer if len(text) < 500 else text[:500]
