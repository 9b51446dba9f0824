"""The API's answers and operator requests (the published event schema is app.events.payloads)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class Accepted(BaseModel):
    event_id: int
    status: str
    duplicate: bool


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    # True when `total` is PostgreSQL's estimate (the unfiltered event list of a large inbox), not a count.
    estimated: bool = False


class AttemptOut(BaseModel):
    number: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str = Field(
        description="how the attempt ended (done, retrying, failed, needs_review, ignored); running: the attempt in "
        "progress, shown from the event; lost: its worker stopped before it finished (its lease ran out)"
    )
    error: str | None


class EventOut(BaseModel):
    id: int
    source: str
    kind: str
    status: str
    subject: str | None
    created_at: datetime
    updated_at: datetime
    attempts: int
    last_error: str | None
    # Why it cannot run yet (an upstream not configured, with what to set); null when nothing holds it.
    waiting_for: str | None = None
    next_attempt_at: datetime | None
    result: dict[str, Any] | None


class EventDetail(EventOut):
    payload: dict[str, Any] | None
    attempt_log: list[AttemptOut]


class CourseLinkOut(BaseModel):
    course_date_id: int
    moodle_course_id: int
    created_by_sync: bool
    created_at: datetime
    updated_at: datetime


class EnrolmentLinkOut(BaseModel):
    moodle_user_id: int
    moodle_course_id: int
    course_date_id: int
    document_external_id: str | None
    status: str
    role_id: int
    timestart: int
    timeend: int
    updated_at: datetime


class UserLinkOut(BaseModel):
    contact_id: int | None
    username: str
    moodle_user_id: int
    suspended_by_sync: bool
    created_at: datetime
    updated_at: datetime


class Problem(BaseModel):
    """A 4xx answer: what was wrong and where."""

    detail: str | list[dict[str, Any]]


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with every $ref resolved, for request bodies read raw (signatures)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].split("/")[-1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


class ReconcileRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"dry_run": True}})

    dry_run: bool = Field(False, description="plan only: change nothing in Moodle or CourseSales")


class RunOut(BaseModel):
    id: int
    kind: str
    trigger: str
    dry_run: bool
    status: str
    progress: dict[str, Any] | None
    counts: dict[str, Any] | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class RunDetail(RunOut):
    plan: list[dict[str, Any]] | None


class NoteIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"note": "checked in CourseSales: the step ran"}}
    )

    note: str | None = Field(None, max_length=2000, description="why, for the audit trail")


class ResolveIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"note": "checked in CourseSales: the step ran"}}
    )

    note: str = Field(..., min_length=1, max_length=2000, description="what the operator found (kept with the event)")


class BulkReplayIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"status": "failed", "kind": "contact.upserted", "limit": 100}}
    )

    status: Literal["failed", "needs_review", "done", "ignored", "retrying"] = "failed"
    source: str | None = Field(None, max_length=32)
    kind: str | None = Field(None, max_length=64)
    limit: int = Field(100, ge=1, le=5000)
    note: str | None = Field(None, max_length=2000)


class BulkReplayOut(BaseModel):
    replayed: list[int]


class PauseOut(BaseModel):
    paused: bool
    since: datetime | None = None
    by: str | None = None


class UserLinkIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"contact_id": 1234, "username": "jane.doe@example.com", "moodle_user_id": 42}},
    )

    contact_id: int | None = Field(None, ge=1, le=2_147_483_647)
    username: str = Field(..., min_length=1, max_length=100)
    moodle_user_id: int = Field(..., ge=1, le=2_147_483_647)
    note: str | None = Field(None, max_length=2000)


class CourseLinkIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"course_date_id": 26519, "moodle_course_id": 7}}
    )

    course_date_id: int = Field(..., ge=1, le=2_147_483_647)
    moodle_course_id: int = Field(..., ge=1, le=2_147_483_647)
    note: str | None = Field(None, max_length=2000)


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    note: str | None
