"""Diagnose: why can this student not see this course? The form shows at once; the walk, which asks Moodle and
CourseSales (each read under its own timeout), loads after the page (GET /api/diagnose)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from starlette.responses import HTMLResponse

from app.api import diagnose
from app.api.deps import RuntimeDep, SessionDep
from app.console.auth import SignedDep
from app.console.render import fragment, page
from app.sync.diagnose_model import CONTACT_MAX, DOCUMENT_MAX

router = APIRouter(prefix="/console", include_in_schema=False)

Contact = Annotated[str, Query(max_length=CONTACT_MAX)]
Number = Annotated[str, Query(max_length=12)]
Document = Annotated[str, Query(max_length=DOCUMENT_MAX)]


def _asked(contact: str, course_date: str, document: str) -> dict[str, str]:
    return {k: v.strip() for k, v in (("contact", contact), ("course_date", course_date), ("document", document))
            if v.strip()}  # fmt: skip


@router.get("/diagnose", response_class=HTMLResponse)
async def diagnose_page(
    request: Request, session: SessionDep, user: SignedDep, contact: Contact = "", course_date: Number = "",
    document: Document = "",
) -> HTMLResponse:  # fmt: skip
    asked = _asked(contact, course_date, document)
    return await page(request, session, "diagnose.html", user, asked=asked, query=urlencode(asked))


@router.get("/diagnose/walk", response_class=HTMLResponse)
async def walk_part(
    request: Request, rt: RuntimeDep, user: SignedDep, contact: Contact = "", course_date: Number = "",
    document: Document = "",
) -> HTMLResponse:  # fmt: skip
    """The walk itself, swapped into the page by htmx."""
    asked = _asked(contact, course_date, document)
    if "course_date" in asked and not asked["course_date"].isdigit():
        return fragment(request, "_walk.html", error="course date: a course date id is a number", walk=None)
    try:
        walk = await diagnose.diagnose_route(
            rt, contact=asked.get("contact"), course_date=int(asked["course_date"]) if "course_date" in asked else None,
            document=asked.get("document"),
        )  # fmt: skip
    except HTTPException as exc:
        detail = exc.detail if isinstance(exc.detail, str) else "; ".join(d["msg"] for d in exc.detail)
        return fragment(request, "_walk.html", error=detail, walk=None)
    return fragment(request, "_walk.html", error=None, walk=walk)
