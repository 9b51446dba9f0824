"""The operator API under /api: events with their attempts, replay, links."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from sqlalchemy import ColumnElement, func, select
from sqlmodel import col

from app.api.deps import (
    CONFLICT,
    MAX_ID,
    MAX_OFFSET,
    NOT_FOUND,
    OPS_RESPONSES,
    IdPath,
    SessionDep,
    require_ops,
)
from app.api.schemas import (
    AttemptOut,
    CourseLinkOut,
    EnrolmentLinkOut,
    EventDetail,
    EventOut,
    NoteIn,
    Page,
    UserLinkOut,
)
from app.api.unit_of_work import UnitOfWorkDep
from app.db.models import Attempt, CourseLink, EnrolmentLink, Event, EventStatus, Registration, UserLink
from app.sync import operations, overview

router = APIRouter(prefix="/api", tags=["operations"], dependencies=[Depends(require_ops)], responses=OPS_RESPONSES)

Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]


SUBJECT = (
    "what the events are about, as their `subject` says: `contact:<id>`, `username:<name>`, `course_date:<id>`, "
    "`moodle_user:<id>`"
)
DOCUMENT = "a CourseSales Document's external id: the events of its contact and of its completion"


async def _document_subjects(session: SessionDep, document: str) -> list[str]:
    """The subjects a Document's events carry: its contact's, and its completion's."""
    found = await session.execute(
        select(col(Registration.contact_key), col(Registration.course_date_id)).where(
            col(Registration.document_external_id) == document
        )
    )
    return [s for key, cdid in found for s in (key, f"completion:{key}:{cdid}")]


def _event_out(e: Event) -> EventOut:
    return EventOut.model_validate(e, from_attributes=True)


@router.get("/events", response_model=Page[EventOut], summary="List events, newest first")
async def list_events(
    session: SessionDep,
    status_: Annotated[EventStatus | None, Query(alias="status")] = None,
    source: Annotated[str | None, Query(max_length=32)] = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    subject: Annotated[str | None, Query(max_length=255, description=SUBJECT)] = None,
    document: Annotated[str | None, Query(max_length=128, description=DOCUMENT)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[EventOut]:
    where: list[ColumnElement[bool]] = []
    if status_ is not None:
        where.append(col(Event.status) == status_)
    if source:
        where.append(col(Event.source) == source)
    if kind:
        where.append(col(Event.kind) == kind)
    if subject:
        where.append(col(Event.subject) == subject)
    if document:
        where.append(col(Event.subject).in_(await _document_subjects(session, document)))
    if where:  # a filtered count reads an index
        total = (await session.execute(select(func.count()).select_from(Event).where(*where))).scalar_one()
        estimated = False
    else:  # counting every event grows with the table: the estimate, on a large one
        total, estimated = await overview.events_total(session)
    rows = await session.execute(select(Event).where(*where).order_by(col(Event.id).desc()).limit(limit).offset(offset))
    return Page(items=[_event_out(e) for e in rows.scalars()], total=total, estimated=estimated)


@router.get(
    "/events/{event_id}", response_model=EventDetail, responses=NOT_FOUND, summary="One event with its attempts"
)
async def get_event(event_id: IdPath, session: SessionDep) -> EventDetail:
    event = await session.get(Event, event_id)
    if event is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no event {event_id}")
    attempts = await session.execute(
        select(Attempt).where(col(Attempt.event_id) == event_id).order_by(col(Attempt.number), col(Attempt.id))
    )
    log = [AttemptOut.model_validate(a, from_attributes=True) for a in attempts.scalars()]
    if event.status == EventStatus.running and all(a.number != event.attempts for a in log):
        # A running attempt has no row until it is over: it is the event itself, claimed at its updated_at.
        log.append(AttemptOut(number=event.attempts, started_at=event.updated_at, finished_at=None,
                              outcome=EventStatus.running, error=None))  # fmt: skip
    return EventDetail(**_event_out(event).model_dump(), payload=event.payload, attempt_log=log)


@router.post(
    "/events/{event_id}/replay",
    response_model=EventOut,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Run an event again",
)
async def replay_event(event_id: IdPath, uow: UnitOfWorkDep, body: NoteIn | None = None) -> EventOut:
    """Queue a finished event again; its effects are idempotent, so a replay never doubles them."""
    event = await operations.replay(uow.session, event_id, actor=uow.actor, note=body.note if body else None)
    uow.queue([event])
    if await uow.complete():  # the answer shows it queued
        await uow.session.refresh(event)
    return _event_out(event)


@router.get("/links/users", response_model=Page[UserLinkOut], summary="CourseSales contacts linked to Moodle users")
async def list_user_links(
    session: SessionDep,
    username: Annotated[str | None, Query(max_length=100)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[UserLinkOut]:
    where: list[ColumnElement[bool]] = [col(UserLink.username) == username.lower()] if username else []
    total = (await session.execute(select(func.count()).select_from(UserLink).where(*where))).scalar_one()
    rows = await session.execute(select(UserLink).where(*where).order_by(col(UserLink.id)).limit(limit).offset(offset))
    return Page(items=[UserLinkOut.model_validate(r, from_attributes=True) for r in rows.scalars()], total=total)


@router.get("/links/courses", response_model=Page[CourseLinkOut], summary="Course dates linked to Moodle courses")
async def list_course_links(
    session: SessionDep,
    course_date_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[CourseLinkOut]:
    where: list[ColumnElement[bool]] = [col(CourseLink.course_date_id) == course_date_id] if course_date_id else []
    total = (await session.execute(select(func.count()).select_from(CourseLink).where(*where))).scalar_one()
    rows = await session.execute(
        select(CourseLink).where(*where).order_by(col(CourseLink.id)).limit(limit).offset(offset)
    )
    return Page(items=[CourseLinkOut.model_validate(r, from_attributes=True) for r in rows.scalars()], total=total)


@router.get("/links/enrolments", response_model=Page[EnrolmentLinkOut], summary="Enrolments this service made")
async def list_enrolment_links(
    session: SessionDep,
    course_date_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    moodle_user_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[EnrolmentLinkOut]:
    where: list[ColumnElement[bool]] = []
    if course_date_id:
        where.append(col(EnrolmentLink.course_date_id) == course_date_id)
    if moodle_user_id:
        where.append(col(EnrolmentLink.moodle_user_id) == moodle_user_id)
    total = (await session.execute(select(func.count()).select_from(EnrolmentLink).where(*where))).scalar_one()
    rows = await session.execute(
        select(EnrolmentLink).where(*where).order_by(col(EnrolmentLink.id)).limit(limit).offset(offset)
    )
    return Page(items=[EnrolmentLinkOut.model_validate(r, from_attributes=True) for r in rows.scalars()], total=total)
