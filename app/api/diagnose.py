"""/api/diagnose: why can this student not see this course? The chain walked live (app.sync.diagnose), shown."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from app.api.deps import OPS_RESPONSES, RuntimeDep, require_ops
from app.sync import diagnose
from app.sync.diagnose_model import CONTACT_MAX, COURSE_DATE_MAX, DOCUMENT_MAX

router = APIRouter(prefix="/api", tags=["operations"], dependencies=[Depends(require_ops)], responses=OPS_RESPONSES)


class LinkOut(BaseModel):
    area: Literal["coursesales", "sync", "moodle"]
    name: str = Field(description='stable id of the link, e.g. "course_date.public"')
    ok: bool | None = Field(description="true passed, false failed, null could not be checked (the summary says why)")
    summary: str
    detail: str | None = None


class DiagnoseOut(BaseModel):
    ok: bool = Field(description="every link passed")
    next_step: str = Field(description="the one next step, in plain words: the first failing link's fix")
    links: list[LinkOut]
    contact: str | None = Field(description="the contact key asked about (contact:1234), if any")
    course_date: int | None
    document: str | None


def show(walk: diagnose.Walk) -> DiagnoseOut:
    """A Walk as the API, the CLI (--json) and the console show it."""
    return DiagnoseOut(
        ok=walk.ok,
        next_step=walk.next_step,
        links=[LinkOut(area=k.area, name=k.name, ok=k.ok, summary=k.summary, detail=k.detail) for k in walk.links],
        contact=walk.contact,
        course_date=walk.course_date,
        document=walk.document,
    )


@router.get(
    "/diagnose",
    response_model=DiagnoseOut,
    summary="Why can this student not see this course? Each link of the chain (CourseSales, the sync, Moodle) "
    "checked now, with the one next step",
    responses={422: {"description": "bad query: both course_date and document, or neither contact nor course_date"}},
)
async def diagnose_route(
    rt: RuntimeDep,
    contact: Annotated[
        str | None, Query(max_length=CONTACT_MAX, description="a contact id (1234), a username or an email")
    ] = None,
    course_date: Annotated[int | None, Query(ge=1, le=COURSE_DATE_MAX, description="a course date id")] = None,
    document: Annotated[
        str | None, Query(max_length=DOCUMENT_MAX, description="a Document's external id (instead of course_date)")
    ] = None,
) -> DiagnoseOut:
    query = diagnose.Query(contact=contact, course_date=course_date, document=document)
    try:
        walk = await diagnose.walk(
            sessions=rt.sessions, moodle=rt.moodle, coursesales=rt.coursesales, settings=rt.settings, query=query
        )
    except diagnose.BadQuery as exc:
        raise HTTPException(
            422, detail=[{"loc": ["query", exc.field], "msg": str(exc), "type": "value_error"}]
        ) from None
    return show(walk)
