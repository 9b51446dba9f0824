"""What our own tables say for a diagnosis (app.sync.diagnose), read in one session before any upstream is asked:
the contact as CourseSales last sent it, its links, its Document, the course date's links, the events about them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import desc, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.models import CourseDateRow, CourseLink, DoNotSync, EnrolmentLink, Event, Registration, UserLink
from app.db.tenancy import get_by_key
from app.events.registry import CONTACT_KINDS
from app.sync.diagnose_model import Query
from app.sync.gone import contact_key_for
from app.sync.links import user_links

CONTACT_SCAN = 1000  # newest contact events searched for a username or an email no link names (bounded)
EVENTS_SHOWN = 50  # newest events of the walk's subjects read; the newest of each subject and kind is shown


@dataclass
class Records:
    """Our side of the chain; ``key`` is the contact key events and registrations use (contact:1234)."""

    key: str | None = None
    keys: set[str] = field(default_factory=set)
    contact: dict[str, Any] | None = None
    contact_event: Event | None = None
    password_waiting: bool = False  # an event holds the contact's (encrypted) password, not applied yet
    user_link: UserLink | None = None
    held: DoNotSync | None = None
    registration: Registration | None = None
    registrations: int = 0  # the contact's registrations, when no course date was asked about
    course_date_id: int | None = None
    course_date_row: CourseDateRow | None = None
    course_link: CourseLink | None = None
    enrolment: EnrolmentLink | None = None
    events: list[Event] = field(default_factory=list)
    # Without a contact: the course date's registered learners, by Moodle user id (those with a user link).
    learners: dict[int, str] = field(default_factory=dict)
    unlinked_learners: int = 0

    @property
    def username(self) -> str | None:
        if self.user_link is not None:
            return self.user_link.username
        name = (self.contact or {}).get("username")
        return str(name).strip().lower() if name else None


async def load(s: AsyncSession, query: Query) -> Records:
    """Everything our tables hold about the query's contact, Document and course date."""
    r = Records(course_date_id=query.course_date)
    if query.contact is not None:
        await _contact(s, r, query.contact)
    if query.document is not None:
        r.registration = (
            await s.execute(select(Registration).where(col(Registration.document_external_id) == query.document))
        ).scalar_one_or_none()
        if r.registration is not None:
            r.course_date_id = r.registration.course_date_id
    elif r.key is not None and r.course_date_id is not None:
        r.registration = (
            await s.execute(
                select(Registration)
                .where(col(Registration.contact_key).in_(r.keys), col(Registration.course_date_id) == r.course_date_id)
                .order_by(desc(col(Registration.updated_at)))
                .limit(1)
            )
        ).scalar_one_or_none()
    elif r.key is not None:
        rows = await s.execute(select(col(Registration.id)).where(col(Registration.contact_key).in_(r.keys)))
        r.registrations = len(rows.all())
    if r.course_date_id is not None:
        await _course(s, r, r.course_date_id, with_learners=query.contact is None)
    r.events = await _events(s, r)
    return r


async def _contact(s: AsyncSession, r: Records, text: str) -> None:
    key = contact_key_for(text)
    link = (await user_links(s, [key])).get(key)
    if link is None and key.startswith("username:"):
        key = await _subject_named(s, key.removeprefix("username:")) or key
        link = (await user_links(s, [key])).get(key)
    r.key = link.contact_key if link is not None else key
    r.user_link = link
    r.keys = {r.key} | ({f"username:{link.username}"} if link is not None else set())
    r.contact_event = (
        await s.execute(
            select(Event)
            .where(col(Event.subject).in_(r.keys), col(Event.kind).in_(CONTACT_KINDS), col(Event.payload).is_not(None))
            .order_by(desc(col(Event.id)))
            .limit(1)
        )
    ).scalar_one_or_none()
    if r.contact_event is not None and r.contact_event.payload:
        payload = r.contact_event.payload
        r.contact = payload.get("contact") or (payload.get("registration") or {}).get("contact")
    waiting = await s.execute(
        select(col(Event.id)).where(col(Event.subject).in_(r.keys), col(Event.secret).is_not(None)).limit(1)
    )
    r.password_waiting = waiting.first() is not None
    r.held = (
        await s.execute(select(DoNotSync).where(col(DoNotSync.contact_key).in_(r.keys)).limit(1))
    ).scalar_one_or_none()


async def _subject_named(s: AsyncSession, name: str) -> str | None:
    """The subject of the newest recent contact event whose username or email is ``name`` (lower-cased)."""
    rows = await s.execute(
        select(col(Event.subject), col(Event.payload))
        .where(col(Event.kind).in_(CONTACT_KINDS), col(Event.payload).is_not(None))
        .order_by(desc(col(Event.id)))
        .limit(CONTACT_SCAN)
    )
    for subject, payload in rows:
        contact = (payload or {}).get("contact") or ((payload or {}).get("registration") or {}).get("contact") or {}
        if name in (str(contact.get("username", "")).strip().lower(), str(contact.get("email", "")).strip().lower()):
            return str(subject) if subject else None
    return None


async def _course(s: AsyncSession, r: Records, course_date_id: int, *, with_learners: bool) -> None:
    r.course_date_row = await get_by_key(s, CourseDateRow, course_date_id)
    r.course_link = (
        await s.execute(select(CourseLink).where(col(CourseLink.course_date_id) == course_date_id))
    ).scalar_one_or_none()
    if r.course_link is not None and r.user_link is not None:
        r.enrolment = (
            await s.execute(
                select(EnrolmentLink).where(
                    col(EnrolmentLink.moodle_user_id) == r.user_link.moodle_user_id,
                    col(EnrolmentLink.moodle_course_id) == r.course_link.moodle_course_id,
                )
            )
        ).scalar_one_or_none()
    if with_learners:
        keys = set(
            (
                await s.execute(
                    select(col(Registration.contact_key)).where(
                        col(Registration.course_date_id) == course_date_id, col(Registration.status) == "registered"
                    )
                )
            ).scalars()
        )
        linked = await user_links(s, keys)
        r.learners = {linked[k].moodle_user_id: linked[k].username for k in keys if k in linked}
        r.unlinked_learners = len([k for k in keys if k not in linked])


async def _events(s: AsyncSession, r: Records) -> list[Event]:
    """The newest event of each subject and kind (and course date, for registrations) the walk is about."""
    subjects = set(r.keys)
    if r.course_date_id is not None:
        subjects.add(f"course_date:{r.course_date_id}")
    if r.user_link is not None:
        subjects.add(f"moodle_user:{r.user_link.moodle_user_id}")
    rows = await s.execute(
        select(Event).where(col(Event.subject).in_(subjects)).order_by(desc(col(Event.id))).limit(EVENTS_SHOWN)
    )
    newest: dict[tuple[str | None, str, int | None], Event] = {}
    for event in rows.scalars():
        about = _course_date_of(event)
        if about is not None and r.course_date_id is not None and about != r.course_date_id:
            continue  # a registration for another course date
        newest.setdefault((event.subject, event.kind, about), event)
    return sorted(newest.values(), key=lambda e: e.id)


def _course_date_of(event: Event) -> int | None:
    registration = (event.payload or {}).get("registration")
    value = registration.get("course_date_id") if isinstance(registration, dict) else None
    return int(value) if isinstance(value, int) else None
