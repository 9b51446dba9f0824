"""Needs attention: failed and needs-review events grouped by cause, each with its fix in plain words, and a
group replayed in one go once its cause is fixed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import HTMLResponse, Response

from app.api import attention
from app.api.deps import RuntimeDep, SessionDep
from app.api.schemas import NoteIn
from app.console.actions import perform
from app.console.auth import ChangeDep, SignedDep
from app.console.render import page

router = APIRouter(prefix="/console", include_in_schema=False)

Note = Annotated[str, Form(max_length=2000)]


@router.get("/attention", response_class=HTMLResponse)
async def attention_page(request: Request, session: SessionDep, user: SignedDep) -> HTMLResponse:
    found = await attention.list_attention(session, limit=5000)
    return await page(request, session, "attention.html", user, found=found)


@router.post("/attention/{key}/replay", response_model=None)
async def replay_group(rt: RuntimeDep, user: ChangeDep, key: attention.KeyPath, note: Note = "") -> Response:
    return await perform(rt, user, lambda uow: attention.replay_attention_group(key, uow, NoteIn(note=note or None)),
                         back="/console/attention", said=lambda out: f"{len(out.replayed)} events replayed.",
                         refused="Nothing replayed")  # fmt: skip
