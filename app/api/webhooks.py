"""POST /webhooks/coursesales: our published event schema, posted by CourseSales process rules."""

from __future__ import annotations

from typing import Any, cast

import structlog
from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import ValidationError

from app import jsonsafe
from app.api.deps import read_body, refuse_nul, runtime_of
from app.api.schemas import Accepted, Problem, inline_schema
from app.api.webhook_auth import verify
from app.db import inbox
from app.db.models import EventStatus
from app.events.examples import coursesales_example
from app.events.payloads import CourseSalesEvent, event_contact, event_subject
from app.events.registry import COURSESALES_EVENTS
from app.metrics import EVENTS_RECEIVED
from app.settings import secret
from app.sync.contacts import check_contact
from app.sync.intake import coursesales_delivery

log = structlog.get_logger(__name__)
router = APIRouter(tags=["webhooks"])

_EXAMPLES = {kind: {"summary": kind, "value": coursesales_example(kind)} for kind in COURSESALES_EVENTS}


@router.post(
    "/webhooks/coursesales",
    response_model=Accepted,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Receive a CourseSales event",
    description=(
        "Authenticated by Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`, "
        "secret `SYNC_WEBHOOKS__COURSESALES_SECRET`) or `Authorization: Bearer <SYNC_WEBHOOKS__COURSESALES_TOKEN>`. "
        "The event is committed to the inbox before the answer; a repeat of the same `id` gets the same answer and "
        "does nothing; the same `id` with a different body is refused with 422."
    ),
    responses={
        400: {"model": Problem, "description": "malformed body or missing signature header"},
        401: {"model": Problem, "description": "bad or missing credentials"},
        413: {"model": Problem, "description": "body too large"},
        422: {"model": Problem, "description": "invalid event (the field and the rule are named)"},
    },
    openapi_extra={
        "security": [{"CourseSalesToken": []}, {"StandardWebhooks": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"oneOf": [inline_schema(m) for m in COURSESALES_EVENTS.values()]},
                    "examples": _EXAMPLES,
                }
            },
        },
    },
)
async def coursesales_webhook(request: Request) -> Response:
    # The hot path of the service: no dependencies to solve, and the answer is serialised once, here.
    rt = runtime_of(request)
    settings = rt.settings
    body = await read_body(request)
    verify(
        request,
        body,
        secret=secret(settings.webhooks.coursesales_secret),
        token=secret(settings.webhooks.coursesales_token),
        tolerance=settings.webhooks.tolerance_seconds,
    )
    refuse_nul(body)
    data = _parse_json(body)
    kind = data.get("type")
    model = COURSESALES_EVENTS.get(kind) if isinstance(kind, str) else None
    if model is None or not isinstance(kind, str):
        known = ", ".join(sorted(COURSESALES_EVENTS))
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"type: unknown event type {kind!r}; known: {known}")
    try:
        event = cast(CourseSalesEvent, model.model_validate(data))
    except ValidationError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, _errors(exc)) from None
    contact = event_contact(event)
    if contact is not None:
        problems = check_contact(contact, settings.users)
        if problems:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                [{"loc": ["body", "contact", p.field], "msg": p.message} for p in problems],
            )
    delivery = coursesales_delivery(
        rt.vault,
        body=data,
        kind=kind,
        delivery_id=event.id,
        contact=contact,
        subject=event_subject(event),
    )
    # Stored as queued straight away (one commit on the hot path, shared with the deliveries arriving with it);
    # a failed enqueue turns it back to accepted for the sweeper.
    delivery.status = EventStatus.queued if rt.queue is not None else EventStatus.accepted
    try:
        stored = await rt.accept(delivery)
    except inbox.BodyMismatch as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"id: {exc}") from None
    EVENTS_RECEIVED.labels("coursesales", kind, "accepted" if stored.created else "duplicate").inc()
    log.info("webhook.coursesales.accepted", event_id=stored.event_id, kind=kind, duplicate=not stored.created)
    answer = Accepted(event_id=stored.event_id, status=stored.status, duplicate=not stored.created)
    return Response(answer.model_dump_json(), status_code=status.HTTP_202_ACCEPTED, media_type="application/json")


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        data = jsonsafe.loads(body)
    except jsonsafe.JSONRefused as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "body must be a JSON object")
    return data


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors without the input values (they may hold a password)."""
    return [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
