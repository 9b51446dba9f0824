"""What operators do to events and links (API and CLI alike), each action written to the audit trail."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, Select, delete, func, null, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.models import (
    OPEN_STATUSES,
    AuditEntry,
    Completion,
    CourseLink,
    DoNotSync,
    Event,
    EventStatus,
    Lease,
    UserLink,
)
from app.db.tenancy import ALL_TENANTS, get_by_key
from app.db.types import utcnow
from app.events.registry import COMPLETION_KINDS
from app.sync.gone import contact_key_for

PAUSE = "pause"
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)
L = TypeVar("L", UserLink, CourseLink)


CONTACT_KEY_MAX = 109  # "username:" and Moodle's 100-character username


class OperationError(Exception):
    """The action does not apply; ``status`` is the HTTP status that says why (404, 409)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def audit(
    session: AsyncSession, *, actor: str, action: str, target: str | None = None, note: str | None = None
) -> None:
    session.add(AuditEntry(actor=actor, action=action, target=target, note=note))


async def _event(session: AsyncSession, event_id: int) -> Event:
    event = await session.get(Event, event_id)
    if event is None:
        raise OperationError(404, f"no event {event_id}")
    return event


async def replay(session: AsyncSession, event_id: int, *, actor: str, note: str | None = None) -> Event:
    """Run a finished event again; effects are idempotent, so a replay never doubles one.

    Replaying a completion whose step call had an unknown outcome is the operator saying "it did not run".
    """
    event = await _event(session, event_id)
    if event.status in OPEN_STATUSES and event.status != EventStatus.retrying:
        raise OperationError(409, f"event {event_id} is {event.status}: it will run anyway")
    if event.kind in COMPLETION_KINDS:
        await session.execute(
            update(Completion)
            .where(col(Completion.event_id) == event_id, col(Completion.status).in_(["needs_review", "sending"]))
            .values(status="failed", error="replayed by an operator: the step did not run", updated_at=utcnow())
        )
    event.status, event.next_attempt_at, event.updated_at = EventStatus.accepted, None, utcnow()
    if event.result and event.result.get("posting"):
        event.result = None  # the operator checked: the registration was not posted
    audit(session, actor=actor, action="replay", target=f"event:{event_id}", note=note)
    return event


async def resolve(session: AsyncSession, event_id: int, *, actor: str, note: str) -> Event:
    """Close a needs_review or failed event without running it again, with the operator's note."""
    event = await _event(session, event_id)
    if event.status not in (EventStatus.needs_review, EventStatus.failed):
        raise OperationError(
            409, f"event {event_id} is {event.status}: only needs_review and failed events are resolved"
        )
    if event.kind in COMPLETION_KINDS:
        await session.execute(
            update(Completion)
            .where(
                col(Completion.event_id) == event_id, col(Completion.status).in_(["needs_review", "sending", "failed"])
            )
            .values(status="done", error=f"resolved: {note}", updated_at=utcnow())
        )
    event.status, event.secret, event.updated_at = EventStatus.done, None, utcnow()
    event.result = {**(event.result or {}), "resolved": note, "resolved_by": actor, "was": event.last_error}
    audit(session, actor=actor, action="resolve", target=f"event:{event_id}", note=note)
    return event


async def paused(session: AsyncSession) -> Lease | None:
    return await get_by_key(session, Lease, PAUSE)


async def pause_state(session: AsyncSession) -> tuple[Lease | None, datetime | None]:
    """The pause, if processing is paused, and since when (its audit entry)."""
    lease = await paused(session)
    if lease is None:
        return None, None
    since = (
        await session.execute(select(func.max(AuditEntry.at)).where(col(AuditEntry.action) == "pause"))
    ).scalar_one_or_none()
    return lease, since


async def pause(session: AsyncSession, *, actor: str, note: str | None) -> None:
    """Events are still accepted and kept, but not processed (e.g. during a Moodle upgrade)."""
    if await paused(session) is None:
        session.add(Lease(name=PAUSE, owner=actor[:64], expires_at=FAR_FUTURE))
    audit(session, actor=actor, action="pause", note=note)


async def resume(session: AsyncSession, *, actor: str, note: str | None) -> None:
    await session.execute(delete(Lease).where(col(Lease.name) == PAUSE))
    audit(session, actor=actor, action="resume", note=note)


def _contact_key(contact: str) -> str:
    """The key of a contact an operator named; one longer than a username with its prefix names nobody."""
    key = contact_key_for(contact)
    if len(key) > CONTACT_KEY_MAX:
        raise OperationError(422, f"contact: {len(contact)} characters is longer than any contact id or username")
    return key


async def do_not_sync(session: AsyncSession, contact: str, *, actor: str, note: str | None) -> DoNotSync:
    """Take a contact out of the sync (its id or username): nothing is made for it again, its account deleted in
    Moodle on purpose stays deleted. Marking it twice keeps the first mark."""
    key = _contact_key(contact)
    row = await get_by_key(session, DoNotSync, key)
    if row is None:
        row = DoNotSync(contact_key=key, actor=actor[:64], note=note)
        session.add(row)
        audit(session, actor=actor, action="contact.do_not_sync", target=key, note=note)
    return row


async def sync_again(session: AsyncSession, contact: str, *, actor: str, note: str | None) -> None:
    key = _contact_key(contact)
    row = await get_by_key(session, DoNotSync, key)
    if row is None:
        raise OperationError(404, f"{key} is not marked do not sync")
    await session.delete(row)
    audit(session, actor=actor, action="contact.sync_again", target=key, note=note)


async def unlink_user(session: AsyncSession, moodle_user_id: int, *, actor: str, note: str | None) -> None:
    found = select(UserLink).where(col(UserLink.moodle_user_id) == moodle_user_id)
    await _unlink(session, found, f"moodle_user:{moodle_user_id}", f"no link to Moodle user {moodle_user_id}",
                  actor=actor, action="unlink.user", note=note)  # fmt: skip


async def link_user(
    session: AsyncSession, *, contact_id: int | None, username: str, moodle_user_id: int, actor: str, note: str | None
) -> UserLink:
    username = username.strip().lower()
    clashes = select(UserLink).where(
        (col(UserLink.moodle_user_id) == moodle_user_id)
        | (col(UserLink.username) == username)
        | ((col(UserLink.contact_id) == contact_id) if contact_id else False)
    )
    await _refuse_clash(
        session, clashes, lambda c: f"contact {c.contact_id} / {c.username} <-> Moodle user {c.moodle_user_id}"
    )
    link = UserLink(contact_id=contact_id, username=username, moodle_user_id=moodle_user_id)
    return _add(session, link, actor=actor, action="link.user", target=f"moodle_user:{moodle_user_id}", note=note)


async def link_course(
    session: AsyncSession, *, course_date_id: int, moodle_course_id: int, actor: str, note: str | None
) -> CourseLink:
    clashes = select(CourseLink).where(
        (col(CourseLink.course_date_id) == course_date_id) | (col(CourseLink.moodle_course_id) == moodle_course_id)
    )
    await _refuse_clash(
        session, clashes, lambda c: f"course date {c.course_date_id} <-> Moodle course {c.moodle_course_id}"
    )
    link = CourseLink(course_date_id=course_date_id, moodle_course_id=moodle_course_id, created_by_sync=False)
    return _add(session, link, actor=actor, action="link.course", target=f"course_date:{course_date_id}", note=note)


async def unlink_course(session: AsyncSession, course_date_id: int, *, actor: str, note: str | None) -> None:
    found = select(CourseLink).where(col(CourseLink.course_date_id) == course_date_id)
    await _unlink(session, found, f"course_date:{course_date_id}", f"no link for course date {course_date_id}",
                  actor=actor, action="unlink.course", note=note)  # fmt: skip


async def _refuse_clash(session: AsyncSession, clashes: Select[L], says: Callable[[L], str]) -> None:
    """409 when a new link would collide with an existing one (its unique columns would refuse it anyway)."""
    clash = (await session.execute(clashes)).scalars().first()
    if clash is not None:
        raise OperationError(409, f"already linked: {says(clash)}")


def _add(session: AsyncSession, link: L, *, actor: str, action: str, target: str, note: str | None) -> L:
    """Add an operator's link, audited."""
    session.add(link)
    audit(session, actor=actor, action=action, target=target, note=note)
    return link


async def _unlink(
    session: AsyncSession, found: Select[L], target: str, missing: str, *, actor: str, action: str, note: str | None
) -> None:
    """Delete the link ``found`` selects, audited; 404 (``missing`` says what) when there is none."""
    link = (await session.execute(found)).scalar_one_or_none()
    if link is None:
        raise OperationError(404, missing)
    await session.delete(link)
    audit(session, actor=actor, action=action, target=target, note=note)


async def purge(session: AsyncSession, *, days: int) -> int:
    """Drop the payloads (and any password) of events finished more than ``days`` ago; the rows stay."""
    cutoff = utcnow() - timedelta(days=days)
    # An UPDATE yields a CursorResult; AsyncSession.execute is typed with the Result base that lacks rowcount.
    result = cast(
        CursorResult[Any],
        await session.execute(
            update(Event)
            .where(
                col(Event.updated_at) < cutoff,
                col(Event.status).not_in(list(OPEN_STATUSES)),
                col(Event.payload).is_not(None),
            )
            .values(payload=null(), secret=None)
            # Retention is the hub's: every tenant's events, by the one setting.
            .execution_options(synchronize_session=False, **ALL_TENANTS)
        ),
    )
    return result.rowcount or 0
