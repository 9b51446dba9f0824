"""The service's published event schema and its API answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from app.sync.contacts import Contact

T = TypeVar("T")

CONTACT_EXAMPLE = {
    "contact_id": 1234,
    "username": "Jane.Doe@example.com",
    "firstname": "Jane",
    "lastname": "Doe",
    "email": "jane.doe@example.com",
    "password": "S3cret!pass",
    "phone": "0400000000",
    "active": True,
}


class ContactUpserted(BaseModel):
    """A contact was created or changed in CourseSales: make or update its Moodle user."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"type": "contact.upserted", "id": "d-0001", "contact": CONTACT_EXAMPLE}},
    )

    type: Literal["contact.upserted"]
    id: str = Field(..., min_length=1, max_length=128, description="The sender's delivery id; a repeat is a duplicate")
    contact: Contact


# type -> model; later event kinds are added here.
COURSESALES_EVENTS: dict[str, type[BaseModel]] = {"contact.upserted": ContactUpserted}


class Accepted(BaseModel):
    event_id: int
    status: str
    duplicate: bool


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int


class AttemptOut(BaseModel):
    number: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str
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
    next_attempt_at: datetime | None
    result: dict[str, Any] | None


class EventDetail(EventOut):
    payload: dict[str, Any] | None
    attempt_log: list[AttemptOut]


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

    return resolve(schema)
