"""Links: which CourseSales contact is which Moodle user, which course date is which Moodle course, and the
enrolments this service made; search them, link and unlink (each confirmed)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Query, Request
from pydantic import ValidationError
from starlette.responses import HTMLResponse, Response

from app.api import control, ops
from app.api.deps import MAX_OFFSET, IdPath, RuntimeDep, SessionDep
from app.api.schemas import CourseLinkIn, Page, UserLinkIn
from app.console.actions import Failed, act, perform, reason
from app.console.auth import ChangeDep, Refused, SignedDep
from app.console.render import done, page
from app.db.types import MAX_ID

router = APIRouter(prefix="/console", include_in_schema=False)

PAGE_SIZE = 50
Tab = Literal["users", "courses", "enrolments"]
Note = Annotated[str, Form(max_length=2000)]


def _number(q: str, what: str) -> int | None:
    q = q.strip()
    if not q:
        return None
    if not q.isdigit() or not 1 <= int(q) <= MAX_ID:
        raise Refused(422, f"search: {what} is a whole number, not {q[:40]!r}")
    return int(q)


@router.get("/links", response_class=HTMLResponse)
async def links(
    request: Request,
    session: SessionDep,
    user: SignedDep,
    tab: Annotated[Tab, Query()] = "users",
    q: Annotated[str, Query(max_length=100)] = "",
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> HTMLResponse:
    found: Page[Any]
    if tab == "users":
        found = await ops.list_user_links(session, username=q.strip() or None, limit=PAGE_SIZE, offset=offset)
    elif tab == "courses":
        found = await ops.list_course_links(
            session, course_date_id=_number(q, "a course date id"), limit=PAGE_SIZE, offset=offset
        )
    else:
        found = await ops.list_enrolment_links(
            session, course_date_id=_number(q, "a course date id"), moodle_user_id=None, limit=PAGE_SIZE,
            offset=offset,
        )  # fmt: skip
    return await page(request, session, "links.html", user, tab=tab, q=q, found=found, offset=offset,
                      page_size=PAGE_SIZE)  # fmt: skip


@router.post("/links/users", response_model=None)
async def link_user(
    rt: RuntimeDep, user: ChangeDep, username: Annotated[str, Form(max_length=100)],
    moodle_user_id: Annotated[str, Form(max_length=20)], contact_id: Annotated[str, Form(max_length=20)] = "",
    note: Note = "",
) -> Response:  # fmt: skip
    try:
        body = UserLinkIn.model_validate({"username": username.strip(), "moodle_user_id": moodle_user_id or 0,
                                          "contact_id": contact_id or None, "note": note or None})  # fmt: skip
        await act(rt, user, lambda uow: control.link_user(body, uow))
    except (Failed, ValidationError) as exc:
        return done("/console/links?tab=users", f"Not linked: {reason(exc)}", ok=False)
    # The username as stored: lower-cased, as Moodle keeps it (app.sync.operations.link_user).
    return done("/console/links?tab=users", f"{body.username.lower()} linked to Moodle user {body.moodle_user_id}.")


@router.post("/links/users/{moodle_user_id}/unlink", response_model=None)
async def unlink_user(rt: RuntimeDep, user: ChangeDep, moodle_user_id: IdPath) -> Response:
    return await perform(rt, user, lambda uow: control.unlink_user(moodle_user_id, uow), back="/console/links?tab=users",
                         said=f"Moodle user {moodle_user_id} unlinked.", refused="Not unlinked")  # fmt: skip


@router.post("/links/courses", response_model=None)
async def link_course(
    rt: RuntimeDep, user: ChangeDep, course_date_id: Annotated[str, Form(max_length=20)],
    moodle_course_id: Annotated[str, Form(max_length=20)], note: Note = "",
) -> Response:  # fmt: skip
    try:
        body = CourseLinkIn.model_validate({"course_date_id": course_date_id or 0,
                                            "moodle_course_id": moodle_course_id or 0, "note": note or None})  # fmt: skip
        await act(rt, user, lambda uow: control.link_course(body, uow))
    except (Failed, ValidationError) as exc:
        return done("/console/links?tab=courses", f"Not linked: {reason(exc)}", ok=False)
    return done("/console/links?tab=courses", f"Course date {body.course_date_id} linked.")


@router.post("/links/courses/{course_date_id}/unlink", response_model=None)
async def unlink_course(rt: RuntimeDep, user: ChangeDep, course_date_id: IdPath) -> Response:
    return await perform(rt, user, lambda uow: control.unlink_course(course_date_id, uow),
                         back="/console/links?tab=courses", said=f"Course date {course_date_id} unlinked.",
                         refused="Not unlinked")  # fmt: skip
