"""Events: the list (the filters of GET /api/events and a search by what they are about), one event with its
attempts, and replay, resolve and bulk replay."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Query, Request
from starlette.responses import HTMLResponse, Response

from app.api import control, ops
from app.api.deps import MAX_OFFSET, IdPath, RuntimeDep, SessionDep
from app.api.schemas import BulkReplayIn, NoteIn, ResolveIn
from app.console.actions import Failed, act, perform, reason
from app.console.auth import ChangeDep, Refused, SignedDep
from app.console.render import done, page
from app.db.statuses import EventStatus
from app.logs import masked

router = APIRouter(prefix="/console", include_in_schema=False)

PAGE_SIZE = 50
SEARCH_FIELDS = {"contact": "a contact id", "username": "a username", "course_date": "a course date id",
                 "document": "a Document"}  # fmt: skip
REPLAYABLE = frozenset({"failed", "needs_review", "done", "ignored", "retrying"})
Note = Annotated[str, Form(max_length=2000)]


def _subject(field: str, q: str) -> tuple[str | None, str | None]:
    """The subject (or Document) the search box means; the same subjects the events carry."""
    q = q.strip()
    if not q:
        return None, None
    if field == "document":
        return None, q
    if field in ("contact", "course_date") and not q.isdigit():
        raise Refused(422, f"search: {SEARCH_FIELDS[field]} is a number, not {q[:40]!r}")
    return f"{field}:{q.lower() if field == 'username' else q}", None


@router.get("/events", response_class=HTMLResponse)
async def events(
    request: Request,
    session: SessionDep,
    user: SignedDep,
    status: Annotated[EventStatus | None, Query()] = None,
    source: Annotated[str | None, Query(max_length=32)] = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    field: Annotated[Literal["contact", "username", "course_date", "document"], Query()] = "contact",
    q: Annotated[str, Query(max_length=128)] = "",
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> HTMLResponse:
    subject, document = _subject(field, q)
    found = await ops.list_events(session, status_=status, source=source or None, kind=kind or None,
                                  subject=subject, document=document, limit=PAGE_SIZE, offset=offset)  # fmt: skip
    filters = {k: v for k, v in (("status", status), ("source", source), ("kind", kind)) if v}
    if q:
        filters.update(field=field, q=q)
    bulk = bool(status in REPLAYABLE and not q and found.total)
    return await page(
        request, session, "events.html", user, found=found, filters=filters, field=field, q=q, offset=offset,
        page_size=PAGE_SIZE, statuses=list(EventStatus), search_fields=SEARCH_FIELDS, bulk=bulk,
        bulk_count=min(found.total, 5000), query=urlencode(filters),
    )  # fmt: skip


@router.post("/events/replay", response_model=None)
async def replay_matching(
    rt: RuntimeDep, user: ChangeDep, status: Annotated[str, Form()], source: Annotated[str, Form()] = "",
    kind: Annotated[str, Form()] = "", note: Note = "",
) -> Response:  # fmt: skip
    back = "/console/events?" + urlencode(
        {k: v for k, v in (("status", status), ("source", source), ("kind", kind)) if v}
    )
    try:
        body = BulkReplayIn.model_validate({"status": status, "source": source or None, "kind": kind or None,
                                            "limit": 5000, "note": note or None})  # fmt: skip
        out = await act(rt, user, lambda uow: control.bulk_replay(body, uow))
    except (Failed, ValueError) as exc:
        return done(back, f"Nothing replayed: {reason(exc)}", ok=False)
    return done(back, f"{len(out.replayed)} events replayed.")


@router.get("/events/{event_id}", response_class=HTMLResponse)
async def event(request: Request, event_id: IdPath, session: SessionDep, user: SignedDep) -> HTMLResponse:
    try:
        found = await ops.get_event(event_id, session)
    except HTTPException as exc:
        raise Refused(exc.status_code, str(exc.detail)) from exc
    return await page(request, session, "event.html", user, event=found, payload=masked(found.payload))


@router.post("/events/{event_id}/replay", response_model=None)
async def replay(rt: RuntimeDep, user: ChangeDep, event_id: IdPath, note: Note = "") -> Response:
    return await perform(rt, user, lambda uow: ops.replay_event(event_id, uow, NoteIn(note=note or None)),
                         back=f"/console/events/{event_id}", said=f"Event {event_id} queued again.",
                         refused="Not replayed")  # fmt: skip


@router.post("/events/{event_id}/resolve", response_model=None)
async def resolve(rt: RuntimeDep, user: ChangeDep, event_id: IdPath, note: Note = "") -> Response:
    try:
        body = ResolveIn(note=note.strip())
        await act(rt, user, lambda uow: control.resolve_event(event_id, body, uow))
    except (Failed, ValueError) as exc:
        return done(f"/console/events/{event_id}", f"Not resolved: {reason(exc)}", ok=False)
    return done(f"/console/events/{event_id}", f"Event {event_id} resolved.")
