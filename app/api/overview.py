"""/api/overview and /api/events/per-hour: the console's first page, its numbers and its chart (app.sync.overview).

Registered before app.api.ops: ``/api/events/per-hour`` would otherwise be taken by ``/api/events/{event_id}``
(an integer path: a 422).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from app.api.deps import OPS_RESPONSES, SessionDep, require_ops
from app.sync import overview

router = APIRouter(prefix="/api", tags=["operations"], dependencies=[Depends(require_ops)], responses=OPS_RESPONSES)


class PauseInfoOut(BaseModel):
    paused: bool
    since: datetime | None = Field(None, description="when it was paused (its audit entry)")
    by: str | None = Field(None, description="who paused it")
    note: str | None = Field(None, description="the note given with the pause")


class OldestOut(BaseModel):
    id: int
    kind: str
    created_at: datetime
    age_seconds: float


class LastRunOut(BaseModel):
    id: int
    dry_run: bool
    trigger: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    counts: dict[str, Any]
    error: str | None


class OverviewOut(BaseModel):
    as_of: datetime
    pause: PauseInfoOut
    counts: dict[str, int] = Field(
        description="`open` (accepted, queued, running), `retrying`, `failed`, `needs_review`: events now"
    )
    oldest_unfinished: OldestOut | None = Field(description="the oldest event not finished yet (retrying included)")
    last_run: LastRunOut | None = Field(description="the newest reconcile run")


class PerHourOut(BaseModel):
    window: str
    hours: list[str] = Field(description="each hour's start in UTC, oldest first, the current hour last")
    series: dict[str, list[int]] = Field(
        description="attempts by outcome (done, failed, needs_review, retrying, ignored), one count per hour, "
        "each in the hour it started"
    )


@router.get("/overview", response_model=OverviewOut, summary="The console's overview: pause, counts, oldest, last run")
async def get_overview(session: SessionDep) -> OverviewOut:
    """Read from small indexes only: the same cost at a thousand events or millions."""
    return OverviewOut.model_validate(await overview.summary(session), from_attributes=True)


@router.get("/events/per-hour", response_model=PerHourOut, summary="Attempts per hour by outcome")
async def events_per_hour(
    session: SessionDep,
    window: Annotated[overview.Window, Query(description="the last 24 hours or the last 7 days")] = "24h",
) -> PerHourOut:
    """Every hour of the window is present, with zeros where nothing ran; attempts are counted in the hour they
    started, by how they ended (one still running is not counted yet)."""
    return PerHourOut.model_validate(await overview.per_hour(session, window), from_attributes=True)
