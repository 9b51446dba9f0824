"""The overview: is all well? Health tiles (loaded after the page, each with its own timeout), the pause, the
backlog, the last reconcile and the events per hour; pause and resume."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, HTTPException, Query, Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from app.api import checks, control, overview, round_trip
from app.api.deps import RuntimeDep, SessionDep
from app.api.schemas import NoteIn
from app.console.actions import perform
from app.console.auth import ChangeDep, SignedDep
from app.console.render import fragment, page
from app.health_report import CheckName

router = APIRouter(prefix="/console", include_in_schema=False)

TILES: tuple[CheckName, ...] = ("database", "redis", "moodle", "coursesales")
TILE_SECONDS = 5.0
Note = Annotated[str, Form(max_length=2000)]


@router.get("", response_class=HTMLResponse)
async def overview_page(request: Request, session: SessionDep, user: SignedDep) -> HTMLResponse:
    summary = await overview.get_overview(session)
    return await page(request, session, "overview.html", user, summary=summary, tiles=TILES)


@router.get("/checks/{name}", response_class=HTMLResponse)
async def tile(request: Request, name: CheckName, rt: RuntimeDep, user: SignedDep) -> HTMLResponse:
    """One health tile, asked live; the page shows the others meanwhile."""
    check = await checks.one_check(name, rt, timeout=TILE_SECONDS)
    return fragment(request, "_tile.html", check=check)


@router.get("/data/per-hour")
async def per_hour(
    session: SessionDep, user: SignedDep, window: Annotated[Literal["24h", "7d"], Query()] = "24h"
) -> JSONResponse:
    """The chart's data: GET /api/events/per-hour, for a signed-in operator."""
    data = await overview.events_per_hour(session, window=window)
    return JSONResponse(data.model_dump(mode="json"))


@router.post("/pause", response_model=None)
async def pause(rt: RuntimeDep, user: ChangeDep, note: Note = "") -> Response:
    return await perform(rt, user, lambda uow: control.pause(uow, NoteIn(note=note or None)), back="/console",
                         said="Processing paused: deliveries are still accepted and kept.", refused="Not paused")  # fmt: skip


@router.post("/resume", response_model=None)
async def resume(rt: RuntimeDep, user: ChangeDep, note: Note = "") -> Response:
    return await perform(rt, user, lambda uow: control.resume(rt, uow, NoteIn(note=note or None)), back="/console",
                         said="Processing resumed.", refused="Not resumed")  # fmt: skip


@router.get("/round-trip", response_class=HTMLResponse)
async def round_trip_part(request: Request, session: SessionDep, user: SignedDep) -> HTMLResponse:
    """The last round-trip check (GET /api/check), loaded after the page."""
    try:
        kept = await round_trip.last_check(session)
    except HTTPException:
        kept = None
    return fragment(request, "_round_trip.html", check=kept, user=user)


@router.post("/round-trip", response_model=None)
async def run_round_trip(rt: RuntimeDep, user: ChangeDep) -> Response:
    """Every kind of call the sync makes, on the check's own scratch objects (POST /api/check); it can take minutes
    when it copies the template."""
    return await perform(
        rt, user, lambda uow: round_trip.run_check(round_trip.CheckRequest(round_trip=True), rt, uow), back="/console",
        said=lambda out: "Round-trip check: every step passed." if out.ok else "Round-trip check: a step failed (below).",
        refused="Round-trip check not run",
    )  # fmt: skip
