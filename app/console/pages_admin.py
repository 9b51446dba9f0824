"""The audit trail by operator, and the effective settings with where each came from."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Query, Request
from starlette.responses import HTMLResponse

from app.api import control, settings_view
from app.api.deps import MAX_OFFSET, RuntimeDep, SessionDep
from app.console.auth import Refused, SignedDep
from app.console.render import page

router = APIRouter(prefix="/console", include_in_schema=False)

PAGE_SIZE = 50
Note = Annotated[str, Form(max_length=2000)]


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(
    request: Request,
    session: SessionDep,
    user: SignedDep,
    actor: Annotated[str, Query(max_length=64)] = "",
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> HTMLResponse:
    found = await control.audit_trail(session, actor=actor.strip() or None, limit=PAGE_SIZE, offset=offset)
    return await page(request, session, "audit.html", user, found=found, actor=actor, offset=offset,
                      page_size=PAGE_SIZE)  # fmt: skip


@router.get("/settings", response_class=HTMLResponse)
async def settings_page(request: Request, rt: RuntimeDep, session: SessionDep, user: SignedDep) -> HTMLResponse:
    try:
        found = settings_view.effective_settings(rt)
    except HTTPException as exc:
        raise Refused(exc.status_code, str(exc.detail)) from exc
    return await page(request, session, "settings.html", user, found=found)
