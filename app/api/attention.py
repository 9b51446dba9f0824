"""What needs a person, by cause: GET /api/attention and the replay of one cause's events (issue 18)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import NOT_FOUND, OPS_RESPONSES, SessionDep, require_ops
from app.api.schemas import NoteIn
from app.api.unit_of_work import UnitOfWorkDep
from app.sync import attention

router = APIRouter(prefix="/api", tags=["operations"], dependencies=[Depends(require_ops)], responses=OPS_RESPONSES)

KeyPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=attention.KEY_MAX,
        pattern=attention.KEY_PATTERN,
        description="a group's `key` as GET /api/attention gives it (lower-case letters, digits and `.`, `_`, `:`, "
        "`-`), e.g. `category-unmapped:40`",
    ),
]


class AttentionGroupOut(BaseModel):
    """One cause and the events that have it."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "key": "category-unmapped:40",
                "title": "Moodle category not mapped for CourseSales course category 'First Aid' (40)",
                "fix": "In CourseSales, set the Moodle Category Id (field 'Moodle Category Id') of course category "
                "'First Aid' (40), or of a parent category, to the id of the Moodle category its courses belong in. "
                "Then replay this group.",
                "count": 12,
                "statuses": {"failed": 12},
                "kinds": {"course.sync": 1, "registration.registered": 11},
                "newest_at": "2026-03-02T09:15:00Z",
                "oldest_at": "2026-03-01T17:40:00Z",
                "event_ids": [812, 811, 790],
            }
        }
    )

    key: str = Field(description="stable, URL-safe: POST /api/attention/{key}/replay")
    title: str = Field(description="what went wrong, in plain words")
    fix: str = Field(description="what a person does about it, and where")
    count: int = Field(description="events with this cause (among those read)")
    statuses: dict[str, int] = Field(description="how many are failed, how many needs_review")
    kinds: dict[str, int] = Field(description="how many of each event kind")
    newest_at: datetime = Field(description="when the newest of them last changed")
    oldest_at: datetime = Field(description="when the oldest of them last changed")
    event_ids: list[int] = Field(description=f"up to {attention.SAMPLES} of them, newest first")


class AttentionOut(BaseModel):
    groups: list[AttentionGroupOut] = Field(description="largest group first")
    total: int = Field(description="events waiting for a person (failed or needs_review), all of them")
    truncated: bool = Field(description="true when more events wait than were read: the groups show the newest")


class AttentionReplayOut(BaseModel):
    replayed: list[int] = Field(description="the events run again, oldest first")


@router.get("/attention", response_model=AttentionOut, summary="Events that need a person, grouped by cause")
async def list_attention(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=50_000, description="newest events read")] = 5000,
) -> AttentionOut:
    """Failed and needs_review events by cause, each group with what to fix and where, in plain words; once fixed,
    POST /api/attention/{key}/replay runs the whole group again."""
    found = await attention.groups(session, limit_events=limit)
    items = [
        AttentionGroupOut(
            key=g.cause.key,
            title=g.cause.title,
            fix=g.cause.fix,
            count=g.count,
            statuses=g.statuses,
            kinds=g.kinds,
            newest_at=g.newest_at,
            oldest_at=g.oldest_at,
            event_ids=g.event_ids,
        )
        for g in found
    ]
    return AttentionOut(groups=items, total=found.total, truncated=found.truncated)


@router.post(
    "/attention/{key}/replay",
    response_model=AttentionReplayOut,
    responses=NOT_FOUND,
    summary="Replay every event of one cause, once it is fixed",
)
async def replay_attention_group(key: KeyPath, uow: UnitOfWorkDep, body: NoteIn | None = None) -> AttentionReplayOut:
    """Runs every failed or needs_review event whose cause is `key` again (up to 5,000 a call: a second call takes
    the rest), each audited; effects are idempotent, so a replay never doubles one. For needs_review events,
    replaying says "it did not happen": check first. 404 when no event has this cause (any more)."""
    events = await attention.replay_group(uow.session, key, actor=uow.actor, note=body.note if body else None)
    uow.queue(events)
    return AttentionReplayOut(replayed=[e.id for e in events])
