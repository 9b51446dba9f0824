"""Registrations (CourseSales Documents) -> Moodle manual enrolments; cancellations -> suspend or unenrol."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.inbox import Outcome
from app.db.models import CourseDateRow, CourseLink, EnrolmentLink, Event, EventStatus, Registration, UserLink
from app.db.types import utcnow
from app.db.upsert import insert_for
from app.events.registry import Family, kinds_of
from app.moodle.client import MoodleClient
from app.settings import Settings
from app.sync.contacts import Contact
from app.sync.courses import course_times
from app.sync.users import VERIFY_USER

log = structlog.get_logger(__name__)


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
        self._links: dict[int, CourseLink] = {}

    async def hold(self, events: list[Event]) -> dict[int, Outcome]:
        """Record each registration; answer those that cannot be enrolled yet (retrying) or at all (failed)."""
        if not events:
            return {}
        regs = {event.id: _registration(event) for event in events}
        course_dates = {int(r["course_date_id"]) for r in regs.values()}
        # Course jobs first, links second: a job seen finished has its link (same commit) visible to the second read.
        jobs = await self._finished_course_jobs(course_dates, min(e.created_at for e in events))
        self._links = await self._course_links(course_dates)
        await self._record_all(
            [
                (r["document_external_id"], int(r["course_date_id"]), _contact_key(r), "registered")
                for r in regs.values()
            ]
        )
        outcomes: dict[int, Outcome] = {}
        for event in events:
            cdid = int(regs[event.id]["course_date_id"])  # type: ignore[index]
            if cdid in self._links:
                continue
            why = _why_no_course(jobs.get(cdid, []), event)
            if why is not None:
                outcomes[event.id] = Outcome(  # type: ignore[index]
                    EventStatus.failed, f"course date {cdid} has no Moodle course: {why}", alert="course.missing"
                )
                continue
            self.pending.course_dates.add(cdid)
            outcomes[event.id] = Outcome(EventStatus.retrying, f"waiting for the Moodle course of course date {cdid}")  # type: ignore[index]
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
            reg = regs[event.id]  # type: ignore[index]
            link = self._links[int(reg["course_date_id"])]
            wanted.append((event, self._desired(user_ids[event.id], link, reg, rows)))  # type: ignore[index]
        return await self._enrol(wanted, unverified or set())

    async def cancelled(self, events: list[Event]) -> dict[int, Outcome]:
        outcomes: dict[int, Outcome] = {}
        action = self.settings.enrolments.unenrol_action
        for event in events:
            reg = (event.payload or {})["registration"]
            doc, cdid = reg["document_external_id"], int(reg["course_date_id"])
            contact_key = f"contact:{reg['contact_id']}"
            await self._record_all([(doc, cdid, contact_key, "cancelled")])
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

    async def _record_all(self, items: list[tuple[str, int, str, str]]) -> None:
        """Keep each (document, course date, contact key, status) in the registrations table: one upsert."""
        now = utcnow()
        rows = {
            document: {
                "document_external_id": document,
                "course_date_id": course_date_id,
                "contact_key": contact_key,
                "status": status,
                "created_at": now,
                "updated_at": now,
            }
            for document, course_date_id, contact_key, status in items  # a document twice: the last one counts
        }
        stmt = insert_for(self.session, Registration.__table__)
        stmt = stmt.on_conflict_do_update(
            index_elements=["document_external_id"],
            set_={"status": stmt.excluded.status, "updated_at": stmt.excluded.updated_at},
        )
        await self.session.execute(stmt, list(rows.values()))

    async def _finished_course_jobs(self, course_dates: set[int], since: datetime) -> dict[int, list[Event]]:
        """Course jobs of these course dates that finished since ``since``, newest first, by course date."""
        subjects = {f"course_date:{cdid}": cdid for cdid in course_dates}
        jobs = (
            await self.session.execute(
                select(Event)
                .where(
                    Event.subject.in_(list(subjects)),
                    Event.kind.in_(kinds_of(Family.courses)),
                    Event.status.in_([EventStatus.done, EventStatus.failed]),
                    Event.updated_at >= since,
                )
                .order_by(Event.id.desc())
            )
        ).scalars()
        out: dict[int, list[Event]] = {}
        for job in jobs:
            out.setdefault(subjects[job.subject], []).append(job)  # type: ignore[index]
        return out

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

    async def _course_links(self, course_dates: set[int]) -> dict[int, CourseLink]:
        rows = await self.session.execute(select(CourseLink).where(CourseLink.course_date_id.in_(list(course_dates))))
        return {link.course_date_id: link for link in rows.scalars()}

    async def _course_date_rows(self, course_dates: set[int]) -> dict[int, CourseDateRow]:
        if not self.settings.enrolments.use_course_dates or not course_dates:
            return {}
        rows = await self.session.execute(select(CourseDateRow).where(CourseDateRow.id.in_(list(course_dates))))
        return {row.id: row for row in rows.scalars()}

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

    def _desired(
        self, user_id: int, link: CourseLink, reg: dict[str, Any], rows: dict[int, CourseDateRow]
    ) -> dict[str, Any]:
        item: dict[str, Any] = {
            "roleid": self.settings.enrolments.role_id,
            "userid": user_id,
            "courseid": link.moodle_course_id,
        }
        cd = rows.get(link.course_date_id)
        if cd is not None:
            start, end = course_times(cd, self.settings.courses)
            item |= {"timestart": start, "timeend": end}
        item["_course_date_id"] = link.course_date_id
        item["_document"] = reg["document_external_id"]
        return item

    async def _enrolment_links(self, items: list[dict[str, Any]]) -> dict[tuple[int, int], EnrolmentLink]:
        """Our enrolment links for these (user, course) pairs, in one read."""
        pairs = {(item["userid"], item["courseid"]) for item in items}
        if not pairs:
            return {}
        rows = await self.session.execute(
            select(EnrolmentLink).where(
                EnrolmentLink.moodle_user_id.in_(sorted({u for u, _ in pairs})),
                EnrolmentLink.moodle_course_id.in_(sorted({c for _, c in pairs})),
            )
        )
        return {
            (link.moodle_user_id, link.moodle_course_id): link
            for link in rows.scalars()
            if (link.moodle_user_id, link.moodle_course_id) in pairs
        }

    async def _enrol(self, wanted: list[tuple[Event, dict[str, Any]]], unverified: set[int]) -> dict[int, Outcome]:
        """Send only what differs from what we know we made: enrol_manual_enrol_users is an upsert."""
        outcomes: dict[int, Outcome] = {}
        links = await self._enrolment_links([item for _, item in wanted])
        to_send: list[tuple[Event, dict[str, Any]]] = []
        for event, item in wanted:
            link = links.get((item["userid"], item["courseid"]))
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
                to_send.append((event, item))
        if not to_send:
            return outcomes
        results = await self.moodle.enrol_users(
            [{k: v for k, v in i.items() if not k.startswith("_")} for _, i in to_send]
        )
        made: dict[tuple[int, int], dict[str, Any]] = {}
        for (event, item), res in zip(to_send, results, strict=True):
            if not res.ok:
                outcomes[event.id] = _refused(res.error, checked=event.id not in unverified)  # type: ignore[index]
                continue
            self._remember(links, made, item)
            outcomes[event.id] = Outcome(EventStatus.done, result=_result(item, "enrolled"))  # type: ignore[index]
            log.info("moodle.enrolment.created", moodle_user_id=item["userid"], moodle_course_id=item["courseid"])
        if made:
            # New links as rows in one executemany: no ORM object, no flush, for each of a first sync's enrolments.
            await self.session.execute(insert(EnrolmentLink.__table__), list(made.values()))  # type: ignore[attr-defined]
        return outcomes

    def _remember(
        self,
        links: dict[tuple[int, int], EnrolmentLink],
        made: dict[tuple[int, int], dict[str, Any]],
        item: dict[str, Any],
    ) -> None:
        """Record the enrolment as made (a new link goes into ``made``); two registrations of one pair in a batch
        share one link."""
        key = (item["userid"], item["courseid"])
        values = {
            "status": "active",
            "role_id": item["roleid"],
            "timestart": item.get("timestart", 0),
            "timeend": item.get("timeend", 0),
            "document_external_id": item["_document"],
            "updated_at": utcnow(),
        }
        link = links.get(key)
        if link is not None:
            for name, value in values.items():
                setattr(link, name, value)
            return
        made[key] = values | {
            "moodle_user_id": key[0],
            "moodle_course_id": key[1],
            "course_date_id": item["_course_date_id"],
            "created_at": values["updated_at"],
        }


def _registration(event: Event) -> dict[str, Any]:
    return (event.payload or {})["registration"]


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


def _refused(error: Any, *, checked: bool) -> Outcome:
    """A refused enrolment: failed, unless its user was not read from Moodle (it may be gone): then read it again."""
    if checked:
        return Outcome(EventStatus.failed, f"Moodle refused the enrolment: {error}")
    return Outcome(
        EventStatus.retrying,
        f"Moodle refused the enrolment ({error}); its user is read from Moodle again on the next attempt",
        result={VERIFY_USER: True},
    )


def _result(item: dict[str, Any], action: str) -> dict[str, Any]:
    return {"moodle_user_id": item["userid"], "moodle_course_id": item["courseid"], "enrolment": action}
