"""Registrations -> Moodle manual enrolments: only what differs from our enrolment links is sent (Moodle's
enrol_manual_enrol_users is an upsert), and the links it makes are rows for one executemany."""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.arrays import insert_rows, one_of
from app.db.inbox import Outcome
from app.db.models import CourseDateRow, CourseLink, EnrolmentLink, Event, EventStatus
from app.db.tenancy import tenant_of
from app.db.types import utcnow
from app.moodle.client import MoodleClient
from app.moodle.errors import MoodleError
from app.settings import Settings
from app.sync.courses import course_times
from app.sync.tables import table_of
from app.sync.users import VERIFY_USER

log = structlog.get_logger(__name__)

Pair = tuple[int, int]  # (Moodle user id, Moodle course id)


class Enroller:
    """Enrols the users of registrations and keeps our enrolment links; the caller commits."""

    def __init__(self, *, session: AsyncSession, moodle: MoodleClient, settings: Settings) -> None:
        self.session = session
        self.moodle = moodle
        self.settings = settings

    def desired(
        self, user_id: int, link: CourseLink, reg: dict[str, Any], rows: dict[int, CourseDateRow]
    ) -> dict[str, Any]:
        """The enrolment a registration asks for; its ``_`` keys are ours, never sent to Moodle."""
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

    async def enrol(self, wanted: list[tuple[Event, dict[str, Any]]], unverified: set[int]) -> dict[int, Outcome]:
        """Send only what differs from what we know we made: enrol_manual_enrol_users is an upsert."""
        outcomes: dict[int, Outcome] = {}
        links = await self._links([item for _, item in wanted])
        to_send: list[tuple[Event, dict[str, Any]]] = []
        for event, item in wanted:
            link = links.get((item["userid"], item["courseid"]))
            if link is not None and _same(link, item):
                link.document_external_id = item["_document"]
                outcomes[event.id] = Outcome(EventStatus.done, result=_result(item, "unchanged"))
            else:
                to_send.append((event, item))
        if not to_send:
            return outcomes
        results = await self.moodle.enrol_users(
            [{k: v for k, v in i.items() if not k.startswith("_")} for _, i in to_send]
        )
        made: dict[Pair, dict[str, Any]] = {}
        for (event, item), res in zip(to_send, results, strict=True):
            if not res.ok:
                outcomes[event.id] = _refused(res.error, checked=event.id not in unverified)
                continue
            self._remember(links, made, item)
            outcomes[event.id] = Outcome(EventStatus.done, result=_result(item, "enrolled"))
            log.info("moodle.enrolment.created", moodle_user_id=item["userid"], moodle_course_id=item["courseid"])
        if made:
            # New links as rows in one statement: no ORM object, no flush, for each of a first sync's enrolments.
            tenant = {"tenant_id": tenant_of(self.session)}
            await insert_rows(self.session, table_of(EnrolmentLink), [row | tenant for row in made.values()])
        return outcomes

    async def _links(self, items: list[dict[str, Any]]) -> dict[Pair, EnrolmentLink]:
        """Our enrolment links for these (user, course) pairs, in one read."""
        pairs = {(item["userid"], item["courseid"]) for item in items}
        if not pairs:
            return {}
        rows = await self.session.execute(
            select(EnrolmentLink).where(
                one_of(self.session, col(EnrolmentLink.moodle_user_id), sorted({u for u, _ in pairs})),
                one_of(self.session, col(EnrolmentLink.moodle_course_id), sorted({c for _, c in pairs})),
            )
        )
        return {
            (link.moodle_user_id, link.moodle_course_id): link
            for link in rows.scalars()
            if (link.moodle_user_id, link.moodle_course_id) in pairs
        }

    def _remember(
        self, links: dict[Pair, EnrolmentLink], made: dict[Pair, dict[str, Any]], item: dict[str, Any]
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


def _same(link: EnrolmentLink, item: dict[str, Any]) -> bool:
    """Whether our link says Moodle already has this enrolment, active, as the item wants it."""
    return link.status == "active" and (link.timestart, link.timeend, link.role_id) == (
        item.get("timestart", 0),
        item.get("timeend", 0),
        item["roleid"],
    )


def _refused(error: MoodleError | None, *, checked: bool) -> Outcome:
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
