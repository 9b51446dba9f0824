"""Operator control: resolve, bulk replay, pause and resume, link and unlink, the audit trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from sqlalchemy import ColumnElement, func, select
from sqlmodel import col

from app.api.deps import CONFLICT, MAX_OFFSET, NOT_FOUND, OPS_RESPONSES, IdPath, RuntimeDep, SessionDep, require_ops
from app.api.schemas import (
    AuditOut,
    BulkReplayIn,
    BulkReplayOut,
    CourseLinkIn,
    CourseLinkOut,
    EventOut,
    NoteIn,
    Page,
    PauseOut,
    ResolveIn,
    UserLinkIn,
    UserLinkOut,
)
from app.api.unit_of_work import UnitOfWorkDep
from app.db.models import AuditEntry, Event
from app.jobs.sweeper import release_held
from app.sync import operations

router = APIRouter(prefix="/api", tags=["operations"], dependencies=[Depends(require_ops)], responses=OPS_RESPONSES)


@router.post(
    "/events/{event_id}/resolve",
    response_model=EventOut,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Close a needs_review or failed event",
)
async def resolve_event(event_id: IdPath, body: ResolveIn, uow: UnitOfWorkDep) -> EventOut:
    """Closes the event without running it again (e.g. the operator checked CourseSales: the step ran)."""
    event = await operations.resolve(uow.session, event_id, actor=uow.actor, note=body.note)
    return EventOut.model_validate(event, from_attributes=True)


@router.post("/events/replay", response_model=BulkReplayOut, summary="Replay every event matching a filter")
async def bulk_replay(body: BulkReplayIn, uow: UnitOfWorkDep) -> BulkReplayOut:
    where: list[ColumnElement[bool]] = [col(Event.status) == body.status]
    if body.source:
        where.append(col(Event.source) == body.source)
    if body.kind:
        where.append(col(Event.kind) == body.kind)
    rows = list(
        (await uow.session.execute(select(Event).where(*where).order_by(col(Event.id)).limit(body.limit))).scalars()
    )
    for event in rows:
        await operations.replay(uow.session, event.id, actor=uow.actor, note=body.note or "bulk replay")
    uow.queue(rows)
    return BulkReplayOut(replayed=[e.id for e in rows])


@router.get("/pause", response_model=PauseOut, summary="Is processing paused?")
async def pause_state(session: SessionDep) -> PauseOut:
    lease, since = await operations.pause_state(session)
    return PauseOut(paused=lease is not None, by=lease.owner if lease else None, since=since)


@router.post("/pause", response_model=PauseOut, summary="Pause processing (events are still accepted and kept)")
async def pause(uow: UnitOfWorkDep, body: NoteIn | None = None) -> PauseOut:
    await operations.pause(uow.session, actor=uow.actor, note=body.note if body else None)
    await uow.complete()
    lease, since = await operations.pause_state(uow.session)
    return PauseOut(paused=True, by=lease.owner if lease else "api", since=since)


@router.post("/resume", response_model=PauseOut, summary="Resume processing")
async def resume(rt: RuntimeDep, uow: UnitOfWorkDep, body: NoteIn | None = None) -> PauseOut:
    was_paused = await operations.paused(uow.session) is not None
    await operations.resume(uow.session, actor=uow.actor, note=body.note if body else None)
    if was_paused:  # the held work starts now, not at the sweeper's next round
        uow.after_commit(lambda: release_held(rt.sessions, rt.queue, "resumed"))
    return PauseOut(paused=False)


@router.post(
    "/links/users",
    response_model=UserLinkOut,
    responses=CONFLICT,
    status_code=status.HTTP_201_CREATED,
    summary="Link a contact to a Moodle user",
)
async def link_user(body: UserLinkIn, uow: UnitOfWorkDep) -> UserLinkOut:
    link = await operations.link_user(uow.session, **body.model_dump(exclude={"note"}), actor=uow.actor, note=body.note)
    await uow.complete()  # the answer shows the stored link, its id included
    return UserLinkOut.model_validate(link, from_attributes=True)


@router.delete(
    "/links/users/{moodle_user_id}",
    responses=NOT_FOUND,
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Unlink a Moodle user",
)
async def unlink_user(moodle_user_id: IdPath, uow: UnitOfWorkDep) -> None:
    await operations.unlink_user(uow.session, moodle_user_id, actor=uow.actor, note=None)


@router.post(
    "/links/courses",
    response_model=CourseLinkOut,
    responses=CONFLICT,
    status_code=status.HTTP_201_CREATED,
    summary="Link a course date to a Moodle course",
)
async def link_course(body: CourseLinkIn, uow: UnitOfWorkDep) -> CourseLinkOut:
    link = await operations.link_course(
        uow.session, **body.model_dump(exclude={"note"}), actor=uow.actor, note=body.note
    )
    await uow.complete()
    return CourseLinkOut.model_validate(link, from_attributes=True)


@router.delete(
    "/links/courses/{course_date_id}",
    responses=NOT_FOUND,
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Unlink a course date",
)
async def unlink_course(course_date_id: IdPath, uow: UnitOfWorkDep) -> None:
    await operations.unlink_course(uow.session, course_date_id, actor=uow.actor, note=None)


@router.get("/audit", response_model=Page[AuditOut], summary="Operator actions, newest first")
async def audit_trail(
    session: SessionDep,
    actor: Annotated[
        str | None, Query(max_length=64, description="who: an operator's name, `api`, `cli:<user>`, `console`")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Page[AuditOut]:
    where = [col(AuditEntry.actor) == actor] if actor else []
    total = (await session.execute(select(func.count()).select_from(AuditEntry).where(*where))).scalar_one()
    rows = await session.execute(
        select(AuditEntry).where(*where).order_by(col(AuditEntry.id).desc()).limit(limit).offset(offset)
    )
    return Page(items=[AuditOut.model_validate(r, from_attributes=True) for r in rows.scalars()], total=total)
