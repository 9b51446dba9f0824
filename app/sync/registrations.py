"""Registrations (CourseSales Documents) -> Moodle manual enrolments; cancellations -> suspend or unenrol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.inbox import Outcome
from app.db.models import CourseDateRow, CourseLink, EnrolmentLink, Event, EventStatus, Registration, UserLink
from app.db.types import utcnow
from app.moodle.client import MoodleClient
from app.settings import Settings
from app.sync.contacts import Contact
from app.sync.courses import course_times

log = structlog.get_logger(__name__)


@dataclass
class Pending:
    """Course dates whose Moodle course does not exist yet: the caller asks for them to be made."""

    course_dates: set[int] = field(default_factory=set)


class RegistrationSync:
    """Applies registration and cancellation events whose users are already settled. The caller commits."""

    def __init__(self, *, session: AsyncSession, moodle: MoodleClient, settings: Settings) -> None:
        self.session = session
        self.moodle = moodle
        self.settings = settings
        self.pending = Pending()

    async def registered(self, events: list[Event], user_ids: dict[int, int]) -> dict[int, Outcome]:
        """Enrol each registration's user (``user_ids``: event id -> Moodle user id) in its course date's course."""
        outcomes: dict[int, Outcome] = {}
        wanted: list[tuple[Event, dict[str, Any]]] = []
        for event in events:
            reg = (event.payload or {})["registration"]
            contact = Contact.model_validate(reg["contact"])
            await self._record(reg["document_external_id"], int(reg["course_date_id"]), contact.key, "registered")
            link = await self._course_link(int(reg["course_date_id"]))
            if link is None:
                why = await self._no_course(int(reg["course_date_id"]), event)
                if why is not None:
                    outcomes[event.id] = Outcome(
                        EventStatus.failed,
                        f"course date {reg['course_date_id']} has no Moodle course: {why}",
                        alert="course.missing",
                    )  # type: ignore[index]
                    continue
                self.pending.course_dates.add(int(reg["course_date_id"]))
                outcomes[event.id] = Outcome(
                    EventStatus.retrying, f"waiting for the Moodle course of course date {reg['course_date_id']}"
                )  # type: ignore[index]
                continue
            enrolment = await self._desired(user_ids[event.id], link, reg)  # type: ignore[index]
            wanted.append((event, enrolment))
        outcomes.update(await self._enrol(wanted))
        return outcomes

    async def cancelled(self, events: list[Event]) -> dict[int, Outcome]:
        outcomes: dict[int, Outcome] = {}
        action = self.settings.enrolments.unenrol_action
        for event in events:
            reg = (event.payload or {})["registration"]
            doc, cdid = reg["document_external_id"], int(reg["course_date_id"])
            contact_key = f"contact:{reg['contact_id']}"
            await self._record(doc, cdid, contact_key, "cancelled")
            other = await self._other_active(contact_key, cdid, doc)
            if other is not None:
                outcomes[event.id] = Outcome(EventStatus.done, result={"kept": f"registration {other} is still active"})  # type: ignore[index]
                continue
            enrolment = await self._enrolment_for(int(reg["contact_id"]), cdid)
            if enrolment is None or action == "keep" or enrolment.status != "active":
                why = "no enrolment of ours" if enrolment is None else f"enrolment is {enrolment.status}"
                outcomes[event.id] = Outcome(
                    EventStatus.done,
                    result={"action": "none", "why": why if action != "keep" else "unenrol_action is keep"},
                )  # type: ignore[index]
                continue
            item = {"userid": enrolment.moodle_user_id, "courseid": enrolment.moodle_course_id}
            if action == "suspend":
                item |= {
                    "roleid": enrolment.role_id,
                    "suspend": 1,
                    "timestart": enrolment.timestart,
                    "timeend": enrolment.timeend,
                }
                (res,) = await self.moodle.enrol_users([item])
            else:
                (res,) = await self.moodle.unenrol_users([item])
            if not res.ok:
                outcomes[event.id] = Outcome(
                    EventStatus.failed, f"Moodle refused to {action} the enrolment: {res.error}"
                )  # type: ignore[index]
                continue
            enrolment.status = "suspended" if action == "suspend" else "unenrolled"
            enrolment.updated_at = utcnow()
            outcomes[event.id] = Outcome(
                EventStatus.done, result={"action": enrolment.status, "moodle_course_id": enrolment.moodle_course_id}
            )  # type: ignore[index]
        return outcomes

    # -- helpers ---------------------------------------------------------------------------

    async def _record(self, document: str, course_date_id: int, contact_key: str, status: str) -> Registration:
        row = (
            await self.session.execute(select(Registration).where(Registration.document_external_id == document))
        ).scalar_one_or_none()
        if row is None:
            row = Registration(document_external_id=document, course_date_id=course_date_id, contact_key=contact_key)
            self.session.add(row)
        row.status = status
        row.updated_at = utcnow()
        await self.session.flush()
        return row

    async def _no_course(self, course_date_id: int, event: Event) -> str | None:
        """Why the course was not made, when a course job finished after this registration arrived."""
        job = (
            await self.session.execute(
                select(Event)
                .where(
                    Event.subject == f"course_date:{course_date_id}",
                    Event.kind.in_(["course.sync", "course_date.changed"]),
                    Event.status.in_([EventStatus.done, EventStatus.failed]),
                    Event.updated_at >= event.created_at,
                )
                .order_by(Event.id.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        if job is None:
            return None
        if job.status == EventStatus.failed:
            return job.last_error
        return (job.result or {}).get("note") or "the course job made no course"

    async def _other_active(self, contact_key: str, course_date_id: int, document: str) -> str | None:
        """A learner who cancels and registers again has two Documents: the latest active one counts."""
        row = (
            await self.session.execute(
                select(Registration.document_external_id).where(
                    Registration.contact_key == contact_key,
                    Registration.course_date_id == course_date_id,
                    Registration.status == "registered",
                    Registration.document_external_id != document,
                )
            )
        ).first()
        return row[0] if row else None

    async def _course_link(self, course_date_id: int) -> CourseLink | None:
        return (
            await self.session.execute(select(CourseLink).where(CourseLink.course_date_id == course_date_id))
        ).scalar_one_or_none()

    async def _enrolment_for(self, contact_id: int, course_date_id: int) -> EnrolmentLink | None:
        user = (
            await self.session.execute(select(UserLink).where(UserLink.contact_id == contact_id))
        ).scalar_one_or_none()
        if user is None:
            return None
        return (
            await self.session.execute(
                select(EnrolmentLink).where(
                    EnrolmentLink.moodle_user_id == user.moodle_user_id, EnrolmentLink.course_date_id == course_date_id
                )
            )
        ).scalar_one_or_none()

    async def _desired(self, user_id: int, link: CourseLink, reg: dict[str, Any]) -> dict[str, Any]:
        item: dict[str, Any] = {
            "roleid": self.settings.enrolments.role_id,
            "userid": user_id,
            "courseid": link.moodle_course_id,
        }
        if self.settings.enrolments.use_course_dates:
            cd = await self.session.get(CourseDateRow, link.course_date_id)
            if cd is not None:
                start, end = course_times(cd, self.settings.courses)
                item |= {"timestart": start, "timeend": end}
        item["_course_date_id"] = link.course_date_id
        item["_document"] = reg["document_external_id"]
        return item

    async def _enrol(self, wanted: list[tuple[Event, dict[str, Any]]]) -> dict[int, Outcome]:
        """Send only what differs from what we know we made: enrol_manual_enrol_users is an upsert."""
        outcomes: dict[int, Outcome] = {}
        to_send: list[tuple[Event, dict[str, Any], EnrolmentLink | None]] = []
        for event, item in wanted:
            link = (
                await self.session.execute(
                    select(EnrolmentLink).where(
                        EnrolmentLink.moodle_user_id == item["userid"],
                        EnrolmentLink.moodle_course_id == item["courseid"],
                    )
                )
            ).scalar_one_or_none()
            same = (
                link is not None
                and link.status == "active"
                and (link.timestart, link.timeend, link.role_id)
                == (item.get("timestart", 0), item.get("timeend", 0), item["roleid"])
            )
            if same:
                link.document_external_id = item["_document"]  # type: ignore[union-attr]
                outcomes[event.id] = Outcome(EventStatus.done, result=_result(item, "unchanged"))  # type: ignore[index]
            else:
                to_send.append((event, item, link))
        if not to_send:
            return outcomes
        results = await self.moodle.enrol_users(
            [{k: v for k, v in i.items() if not k.startswith("_")} for _, i, _ in to_send]
        )
        for (event, item, link), res in zip(to_send, results, strict=True):
            if not res.ok:
                outcomes[event.id] = Outcome(EventStatus.failed, f"Moodle refused the enrolment: {res.error}")  # type: ignore[index]
                continue
            if link is None:
                link = EnrolmentLink(
                    moodle_user_id=item["userid"],
                    moodle_course_id=item["courseid"],
                    course_date_id=item["_course_date_id"],
                )
                self.session.add(link)
            link.status, link.role_id = "active", item["roleid"]
            link.timestart, link.timeend = item.get("timestart", 0), item.get("timeend", 0)
            link.document_external_id = item["_document"]
            link.updated_at = utcnow()
            outcomes[event.id] = Outcome(EventStatus.done, result=_result(item, "enrolled"))  # type: ignore[index]
            log.info("moodle.enrolment.created", moodle_user_id=item["userid"], moodle_course_id=item["courseid"])
        return outcomes


def _result(item: dict[str, Any], action: str) -> dict[str, Any]:
    return {"moodle_user_id": item["userid"], "moodle_course_id": item["courseid"], "enrolment": action}
