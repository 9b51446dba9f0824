"""Enrolments made in Moodle -> registrations posted to a CourseSales form.

local_webhooks posts *before* Moodle commits, so the enrolment is confirmed in Moodle first (after a short
delay); one that never appears was rolled back and is dropped. Enrolments this service made are never
echoed back: the actor is our own token user, or the enrolment is already in our links.

Posting is in two steps: ``plan`` decides (an outcome, or a ``Post``); the caller makes the intent durable
(``POSTING`` on the event, committed), then ``post`` calls CourseSales: a crash during the call must not post the
registration twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.coursesales.api import CourseSalesApi
from app.coursesales.errors import CourseSalesError, CourseSalesTransientError
from app.db.inbox import Outcome
from app.db.models import CourseLink, EnrolmentLink, Event, EventStatus, Registration, UserLink
from app.db.types import utcnow
from app.moodle.client import MoodleClient
from app.settings import NewEnrolmentsSettings, Settings

log = structlog.get_logger(__name__)

# The event's result while its registration post may be on its way (a replay clears it: app.sync.operations).
POSTING: dict[str, Any] = {"posting": True}


@dataclass(frozen=True)
class Post:
    """A registration to post to CourseSales for a confirmed Moodle enrolment."""

    user: dict[str, Any]
    user_id: int
    course_id: int
    course_date_id: int
    fields: dict[int, str]


class NewEnrolmentSync:
    """One user_enrolment_created event at a time; the caller commits."""

    def __init__(
        self,
        *,
        session: AsyncSession,
        moodle: MoodleClient,
        coursesales: CourseSalesApi,
        settings: Settings,
        token_user_id: int | None,
    ) -> None:
        self.session = session
        self.moodle = moodle
        self.coursesales = coursesales
        self.settings = settings
        self.token_user_id = token_user_id

    async def plan(self, event: Event) -> Outcome | Post:
        """What to do with the enrolment: an outcome now, or a registration to post."""
        p = event.payload or {}
        user_id, course_id, actor = (
            int(p.get("relateduserid") or 0),
            int(p.get("courseid") or 0),
            int(p.get("userid") or 0),
        )
        answered = await self._not_to_post(event, user_id, course_id, actor)
        if answered is None:
            answered = await self._unconfirmed(event, user_id, course_id)
        return answered if answered is not None else await self._registration(user_id, course_id)

    async def _not_to_post(self, event: Event, user_id: int, course_id: int, actor: int) -> Outcome | None:
        """An enrolment this service made or knows, or one an earlier attempt may have posted: never posted again."""
        if self.token_user_id is not None and actor == self.token_user_id:
            return Outcome(EventStatus.done, result={"skipped": "made by this service"})
        ours = (
            await self.session.execute(
                select(EnrolmentLink).where(
                    col(EnrolmentLink.moodle_user_id) == user_id, col(EnrolmentLink.moodle_course_id) == course_id
                )
            )
        ).scalar_one_or_none()
        if ours is not None:
            return Outcome(EventStatus.done, result={"skipped": "an enrolment this service made or knows"})
        if (event.result or {}).get("posting"):
            return Outcome(
                EventStatus.needs_review,
                "an earlier attempt may have posted this registration: check CourseSales, then resolve",
            )
        return None

    async def _unconfirmed(self, event: Event, user_id: int, course_id: int) -> Outcome | None:
        """Wait until Moodle shows the enrolment (local_webhooks posts before the commit); drop one rolled back."""
        cfg = self.settings.new_enrolments
        age = utcnow() - event.created_at
        if age < timedelta(seconds=cfg.confirm_delay_seconds):
            return Outcome(
                EventStatus.retrying,
                "waiting for Moodle to commit the enrolment",
                next_attempt_at=event.created_at + timedelta(seconds=cfg.confirm_delay_seconds),
            )
        enrolled = {int(u["id"]) for u in await self.moodle.get_enrolled_users(course_id)}
        if user_id in enrolled:
            return None
        if age < timedelta(seconds=cfg.confirm_window_seconds):
            return Outcome(
                EventStatus.retrying,
                "the enrolment is not visible in Moodle yet",
                next_attempt_at=utcnow() + timedelta(seconds=cfg.confirm_delay_seconds),
            )
        return Outcome(EventStatus.done, result={"dropped": "the enrolment never appeared in Moodle (rolled back)"})

    async def _registration(self, user_id: int, course_id: int) -> Outcome | Post:
        """The registration to post for a confirmed enrolment, or why there can be none."""
        cfg = self.settings.new_enrolments
        link = (
            await self.session.execute(select(CourseLink).where(col(CourseLink.moodle_course_id) == course_id))
        ).scalar_one_or_none()
        if link is None:
            return Outcome(EventStatus.failed, f"Moodle course {course_id} is not linked to a CourseSales course date")
        found = await self.moodle.get_users_by_field("id", [user_id])
        if not found:
            return Outcome(EventStatus.done, result={"dropped": f"Moodle user {user_id} no longer exists"})
        user = found[0]
        if "firstname" not in user or "lastname" not in user:
            return Outcome(
                EventStatus.failed,
                "Moodle hides first and last names from this token: give its role moodle/site:viewfullnames, then replay",
            )
        missing = [n for n in ("form_id", "process_path_id", "process_step_id") if getattr(cfg, n) is None]
        if missing:
            return Outcome(
                EventStatus.failed,
                f"new_enrolments is on but {', '.join('new_enrolments.' + m for m in missing)} not set",
            )
        return Post(
            user=user,
            user_id=user_id,
            course_id=course_id,
            course_date_id=link.course_date_id,
            fields=_fields(cfg, user),
        )

    async def post(self, event: Event, post: Post) -> Outcome:
        """Post the registration (the caller has committed ``POSTING``); a failure that surely never reached
        CourseSales is raised, for the caller to clear the mark and retry."""
        cfg = self.settings.new_enrolments
        assert cfg.form_id is not None and cfg.process_path_id is not None and cfg.process_step_id is not None
        try:
            answer = await self.coursesales.post_registration(
                form_id=cfg.form_id,
                process_path_id=cfg.process_path_id,
                process_step_id=cfg.process_step_id,
                fields=post.fields,
            )
        except CourseSalesTransientError as exc:
            if exc.maybe_sent:
                return Outcome(
                    EventStatus.needs_review, f"the registration post's outcome is unknown ({exc}): check CourseSales"
                )
            raise
        except CourseSalesError as exc:
            return Outcome(EventStatus.failed, f"CourseSales refused the registration: {exc}")
        document = self.coursesales.registration_document_id(answer)
        self.session.add(
            EnrolmentLink(
                moodle_user_id=post.user_id,
                moodle_course_id=post.course_id,
                course_date_id=post.course_date_id,
                document_external_id=document,
            )
        )
        if document is None:
            return Outcome(
                EventStatus.needs_review,
                "registration posted, but CourseSales' answer names no Document: link it by hand for completions",
            )
        key = await self._contact_key(post.user)
        self.session.add(
            Registration(document_external_id=document, course_date_id=post.course_date_id, contact_key=key)
        )
        log.info("coursesales.registration.posted", event_id=event.id, document=document)
        return Outcome(EventStatus.done, result={"document": document, "course_date_id": post.course_date_id})

    async def _contact_key(self, user: dict[str, Any]) -> str:
        """The learner as completions find them: through a user link, made here when Moodle had the user first."""
        uid = int(user["id"])
        link = (
            await self.session.execute(select(UserLink).where(col(UserLink.moodle_user_id) == uid))
        ).scalar_one_or_none()
        if link is None:
            link = UserLink(contact_id=None, username=str(user["username"]), moodle_user_id=uid)
            self.session.add(link)
        return link.contact_key


def _fields(cfg: NewEnrolmentsSettings, user: dict[str, Any]) -> dict[int, str]:
    pairs = (
        (cfg.first_name_field_id, user.get("firstname")),
        (cfg.surname_field_id, user.get("lastname")),
        (cfg.username_field_id, user.get("username")),
        (cfg.email_field_id, user.get("email")),
        (cfg.phone_field_id, user.get("phone1")),
    )
    return {int(fid): str(value) for fid, value in pairs if fid and value}
