"""Registrations (CourseSales Documents) -> Moodle manual enrolments; cancellations -> suspend or unenrol.

This module records registrations and decides when they can be enrolled; app.sync.enrolments sends the enrolments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.arrays import insert_rows
from app.db.inbox import Outcome
from app.db.models import CourseDateRow, CourseLink, EnrolmentLink, Event, EventStatus, Registration, UserLink
from app.db.tenancy import tenant_of
from app.db.types import utcnow
from app.events.registry import Family, kinds_of
from app.moodle.client import MoodleClient
from app.settings import Settings
from app.sync.contacts import Contact
from app.sync.enrolments import Enroller
from app.sync.links import course_links
from app.sync.tables import table_of


@dataclass
class Pending:
    """Course dates whose Moodle course does not exist yet: the caller asks for them to be made."""

    course_dates: set[int] = field(default_factory=set)


class RegistrationSync:
    """Applies registration and cancellation events whose users are already settled. The caller commits.

    ``hold`` comes first: it records the registrations and answers those whose Moodle course is not there, before
    any user work, so a registration waiting for its course costs no Moodle call. ``registered`` enrols the rest.
    """

    def __init__(self, *, session: AsyncSession, moodle: MoodleClient, settings: Settings) -> None:
        self.session = session
        self.moodle = moodle
        self.settings = settings
        self.pending = Pending()
        self.enroller = Enroller(session=session, moodle=moodle, settings=settings)
        self._links: dict[int, CourseLink] = {}

    async def hold(self, events: list[Event]) -> dict[int, Outcome]:
        """Record each registration; answer those that cannot be enrolled yet (retrying) or at all (failed)."""
        if not events:
            return {}
        regs = {event.id: _registration(event) for event in events}
        course_dates = {int(r["course_date_id"]) for r in regs.values()}
        self._links = await course_links(self.session, course_dates)
        jobs: dict[int, list[Event]] = {}
        if missing := course_dates - self._links.keys():
            # Only a course date without a link asks why (reading every course job of a batch's course dates made
            # 30,000 event objects in a first sync's drain).
            jobs = await self._finished_course_jobs(missing, min(e.created_at for e in events))
            # Jobs first, links again second: a job seen finished has its link (same commit) visible to this read.
            self._links |= await course_links(self.session, missing)
        await self._record_all(
            [
                (r["document_external_id"], int(r["course_date_id"]), _contact_key(r), "registered")
                for r in regs.values()
            ]
        )
        outcomes: dict[int, Outcome] = {}
        for event in events:
            cdid = int(regs[event.id]["course_date_id"])
            if cdid in self._links:
                continue
            why = _why_no_course(jobs.get(cdid, []), event)
            if why is not None:
                outcomes[event.id] = Outcome(
                    EventStatus.failed, f"course date {cdid} has no Moodle course: {why}", alert="course.missing"
                )
                continue
            self.pending.course_dates.add(cdid)
            outcomes[event.id] = Outcome(EventStatus.retrying, f"waiting for the Moodle course of course date {cdid}")
        return outcomes

    async def registered(
        self, events: list[Event], user_ids: dict[int, int], *, unverified: set[int] | None = None
    ) -> dict[int, Outcome]:
        """Enrol the user of each registration ``hold`` let through (``user_ids``: event id -> Moodle user id).

        ``unverified``: events whose user was taken from its link without a Moodle read; a refused enrolment of
        theirs is retried with the user read again, not failed.
        """
        regs = {event.id: _registration(event) for event in events}
        rows = await self._course_date_rows({link.course_date_id for link in self._links.values()})
        wanted = []
        for event in events:
            reg = regs[event.id]
            link = self._links[int(reg["course_date_id"])]
            wanted.append((event, self.enroller.desired(user_ids[event.id], link, reg, rows)))
        return await self.enroller.enrol(wanted, unverified or set())

    async def cancelled(self, events: list[Event]) -> dict[int, Outcome]:
        """Suspend or unenrol each cancelled registration's enrolment (enrolments.unenrol_action; "keep" leaves it),
        unless another active registration of the learner for that course date keeps it."""
        outcomes: dict[int, Outcome] = {}
        action = self.settings.enrolments.unenrol_action
        for event in events:
            reg = _registration(event)
            doc, cdid = reg["document_external_id"], int(reg["course_date_id"])
            contact_key = f"contact:{reg['contact_id']}"
            await self._record_all([(doc, cdid, contact_key, "cancelled")])
            other = await self._other_active(contact_key, cdid, doc)
            if other is not None:
                outcomes[event.id] = Outcome(EventStatus.done, result={"kept": f"registration {other} is still active"})
                continue
            enrolment = await self._enrolment_for(int(reg["contact_id"]), cdid)
            if enrolment is None or action == "keep" or enrolment.status != "active":
                why = "no enrolment of ours" if enrolment is None else f"enrolment is {enrolment.status}"
                outcomes[event.id] = Outcome(
                    EventStatus.done,
                    result={"action": "none", "why": why if action != "keep" else "unenrol_action is keep"},
                )
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
                )
                continue
            enrolment.status = "suspended" if action == "suspend" else "unenrolled"
            enrolment.updated_at = utcnow()
            outcomes[event.id] = Outcome(
                EventStatus.done, result={"action": enrolment.status, "moodle_course_id": enrolment.moodle_course_id}
            )
        return outcomes

    # -- helpers ---------------------------------------------------------------------------

    async def _record_all(self, items: list[tuple[str, int, str, str]]) -> None:
        """Keep each (document, course date, contact key, status) in the registrations table: one upsert."""
        now, tenant = utcnow(), tenant_of(self.session)
        rows = {
            document: {
                "tenant_id": tenant,
                "document_external_id": document,
                "course_date_id": course_date_id,
                "contact_key": contact_key,
                "status": status,
                "created_at": now,
                "updated_at": now,
            }
            for document, course_date_id, contact_key, status in items  # a document twice: the last one counts
        }
        await insert_rows(self.session, table_of(Registration), list(rows.values()), shape=_newer_status)

    async def _finished_course_jobs(self, course_dates: set[int], since: datetime) -> dict[int, list[Event]]:
        """Course jobs of these course dates that finished since ``since``, newest first, by course date."""
        subjects = {f"course_date:{cdid}": cdid for cdid in course_dates}
        jobs = (
            await self.session.execute(
                select(Event)
                .where(
                    col(Event.subject).in_(list(subjects)),
                    col(Event.kind).in_(kinds_of(Family.courses)),
                    col(Event.status).in_([EventStatus.done, EventStatus.failed]),
                    col(Event.updated_at) >= since,
                )
                .order_by(col(Event.id).desc())
            )
        ).scalars()
        out: dict[int, list[Event]] = {}
        for job in jobs:
            assert job.subject is not None  # the query asked for these subjects
            out.setdefault(subjects[job.subject], []).append(job)
        return out

    async def _other_active(self, contact_key: str, course_date_id: int, document: str) -> str | None:
        """A learner who cancels and registers again has two Documents: the latest active one counts."""
        row = (
            await self.session.execute(
                select(col(Registration.document_external_id)).where(
                    col(Registration.contact_key) == contact_key,
                    col(Registration.course_date_id) == course_date_id,
                    col(Registration.status) == "registered",
                    col(Registration.document_external_id) != document,
                )
            )
        ).first()
        return row[0] if row else None

    async def _course_date_rows(self, course_dates: set[int]) -> dict[int, CourseDateRow]:
        if not self.settings.enrolments.use_course_dates or not course_dates:
            return {}
        rows = await self.session.execute(select(CourseDateRow).where(col(CourseDateRow.id).in_(list(course_dates))))
        return {row.id: row for row in rows.scalars()}

    async def _enrolment_for(self, contact_id: int, course_date_id: int) -> EnrolmentLink | None:
        user = (
            await self.session.execute(select(UserLink).where(col(UserLink.contact_id) == contact_id))
        ).scalar_one_or_none()
        if user is None:
            return None
        return (
            await self.session.execute(
                select(EnrolmentLink).where(
                    col(EnrolmentLink.moodle_user_id) == user.moodle_user_id,
                    col(EnrolmentLink.course_date_id) == course_date_id,
                )
            )
        ).scalar_one_or_none()


def _registration(event: Event) -> dict[str, Any]:
    registration: dict[str, Any] = (event.payload or {})["registration"]
    return registration


def _contact_key(reg: dict[str, Any]) -> str:
    return Contact.model_validate(reg["contact"]).key


def _why_no_course(jobs: list[Event], event: Event) -> str | None:
    """Why the course was not made, when a course job finished after this registration arrived; None: wait."""
    job = next((j for j in jobs if j.updated_at >= event.created_at), None)
    if job is None:
        return None
    if job.status == EventStatus.failed:
        return job.last_error
    if (job.result or {}).get("moodle_course_id") is not None:
        return None  # the course was made, and its link since removed: ask for it again
    return (job.result or {}).get("note") or "the course job made no course"


def _newer_status(stmt: Any) -> Any:
    """A registration seen again keeps its row and takes the newer status."""
    return stmt.on_conflict_do_update(
        index_elements=["tenant_id", "document_external_id"],
        set_={"status": stmt.excluded.status, "updated_at": stmt.excluded.updated_at},
    )
