"""/api/contacts: contacts taken out of the sync ("do not sync", e.g. after an erasure request)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel
from sqlalchemy import select
from sqlmodel import col

from app.api.deps import NOT_FOUND, OPS_RESPONSES, SessionDep, require_ops
from app.api.schemas import NoteIn
from app.api.unit_of_work import UnitOfWorkDep
from app.db.models import DoNotSync
from app.sync import operations

router = APIRouter(prefix="/api", tags=["operations"], dependencies=[Depends(require_ops)], responses=OPS_RESPONSES)
Contact = Annotated[
    str,
    # A username holds up to 100 characters (Moodle's limit); with its "username:" prefix, 109.
    Path(min_length=1, max_length=109, description="a contact id (1234), a username, or a key (contact:1234)"),
]


class DoNotSyncOut(BaseModel):
    contact_key: str
    actor: str
    note: str | None
    created_at: datetime


@router.get("/contacts/do-not-sync", response_model=list[DoNotSyncOut], summary="Contacts taken out of the sync")
async def list_do_not_sync(session: SessionDep) -> list[DoNotSyncOut]:
    rows = (await session.execute(select(DoNotSync).order_by(col(DoNotSync.created_at)))).scalars()
    return [DoNotSyncOut.model_validate(r, from_attributes=True) for r in rows]


@router.put(
    "/contacts/{contact}/do-not-sync",
    response_model=DoNotSyncOut,
    summary="Take a contact out of the sync: nothing is made for it in Moodle again (an account deleted on purpose "
    "stays deleted)",
)
async def mark_do_not_sync(contact: Contact, uow: UnitOfWorkDep, body: NoteIn | None = None) -> DoNotSyncOut:
    row = await operations.do_not_sync(uow.session, contact, actor=uow.actor, note=body.note if body else None)
    await uow.complete()
    return DoNotSyncOut.model_validate(row, from_attributes=True)


@router.delete("/contacts/{contact}/do-not-sync", status_code=204, responses=NOT_FOUND, summary="Sync a contact again")
async def unmark_do_not_sync(contact: Contact, uow: UnitOfWorkDep) -> None:
    await operations.sync_again(uow.session, contact, actor=uow.actor, note=None)
