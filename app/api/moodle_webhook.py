"""POST /webhooks/moodle: Moodle events from forwarding plugins, answered 200 once they are in the inbox."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Mapping

import structlog
from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel

from app.api.deps import RuntimeDep, read_body, refuse_nul
from app.api.schemas import Problem
from app.api.webhook_auth import SIGNATURE_HEADERS, verify
from app.db.inbox import Delivery
from app.db.models import EventStatus
from app.events.examples import moodle_example
from app.events.registry import IGNORED_LABEL, Source, moodle_handled
from app.metrics import EVENTS_RECEIVED
from app.moodle.events import BadEvent, MoodleEvent, body_tokens, normalise, parse_body
from app.settings import secret

log = structlog.get_logger(__name__)
router = APIRouter(tags=["webhooks"])


class MoodleAccepted(BaseModel):
    accepted: int
    duplicate: int
    ignored: int
    event_ids: list[int]


EXAMPLE = moodle_example("local_webhooks.course_completed")


@router.post(
    "/webhooks/moodle",
    response_model=MoodleAccepted,
    summary="Receive Moodle events",
    description=(
        "Moodle event data (`get_data()`) as local_webhooks, tool_trigger or local_trigger post it: one event or a "
        "list, JSON (whatever the Content-Type says) or a flat form, numbers possibly as strings. Authenticated by "
        "Standard Webhooks headers (`SYNC_WEBHOOKS__MOODLE_SECRET`), `Authorization: Bearer` or a `token` field "
        "in the body (`SYNC_WEBHOOKS__MOODLE_TOKEN`). Deduplicated on (eventname, objectid, relateduserid, "
        "timecreated). Always HTTP 200 once stored: tool_trigger counts anything else as a failure."
    ),
    responses={
        400: {"model": Problem, "description": "not Moodle event data (the field is named)"},
        401: {"model": Problem, "description": "bad or missing credentials"},
        413: {"model": Problem, "description": "body too large"},
    },
    openapi_extra={
        "security": [{"MoodleToken": []}, {"StandardWebhooks": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "object", "additionalProperties": True}, "example": EXAMPLE},
                "application/x-www-form-urlencoded": {"schema": {"type": "object", "additionalProperties": True}},
            },
        },
    },
)
async def moodle_webhook(request: Request, rt: RuntimeDep) -> MoodleAccepted:
    settings = rt.settings
    body = await read_body(request)
    has_headers = "authorization" in request.headers or any(h in request.headers for h in SIGNATURE_HEADERS)
    items = None
    body_token: str | None = None
    if not has_headers:
        try:
            items = parse_body(body)
        except (BadEvent, UnicodeDecodeError):
            items = None
        tokens = body_tokens(items or [])
        # Every item must carry the token: one forged item in a list must not ride on another's.
        body_token = tokens[0] if tokens and all(t == tokens[0] for t in tokens) else None
    verify(
        request,
        body,
        secret=secret(settings.webhooks.moodle_secret),
        token=secret(settings.webhooks.moodle_token),
        tolerance=settings.webhooks.tolerance_seconds,
        body_token=body_token,
    )
    refuse_nul(body)
    try:
        events = [normalise(i) for i in (items if items is not None else parse_body(body))]
    except (BadEvent, UnicodeDecodeError) as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"not Moodle event data: {exc}") from None
    kinds = moodle_handled(settings)
    deliveries = [_delivery(ev, kinds) for ev in events]
    for d in deliveries:
        if d.status == EventStatus.accepted and rt.queue is not None:
            d.status = EventStatus.queued  # the intake queues its job, or turns it back to accepted
    # Through the same group commit as CourseSales' webhooks; gathered in order, so ids follow the events' order.
    stored = await asyncio.gather(*(rt.accept(d) for d in deliveries))
    outcomes = [
        "duplicate" if not row.created else "ignored" if row.status == EventStatus.ignored else "accepted"
        for row in stored
    ]
    for d, outcome in zip(deliveries, outcomes, strict=True):
        # A sender may post any event name: every one we ignore shares one label value.
        EVENTS_RECEIVED.labels("moodle", d.kind if d.status != EventStatus.ignored else IGNORED_LABEL, outcome).inc()
    counts = Counter(outcomes)
    answer = MoodleAccepted(
        accepted=counts["accepted"],
        duplicate=counts["duplicate"],
        ignored=counts["ignored"],
        event_ids=[row.event_id for row in stored],
    )
    log.info("webhook.moodle.accepted", **answer.model_dump(exclude={"event_ids"}), event_ids=answer.event_ids)
    return answer


def _delivery(ev: MoodleEvent, kinds: Mapping[str, str]) -> Delivery:
    key = ev.dedupe_key
    if len(key) > 128:
        key = hashlib.sha256(key.encode()).hexdigest()
    kind = kinds.get(ev.eventname)
    return Delivery(
        source=Source.moodle,
        kind=kind or ev.short_name[:64],
        dedupe_key=key,
        # A resend through another plugin differs in transport keys but is the same event: no 422 here.
        body_hash=hashlib.sha256(key.encode()).hexdigest(),
        payload=ev.data,
        subject=f"moodle_user:{ev.relateduserid}" if ev.relateduserid else None,
        status=EventStatus.accepted if kind else EventStatus.ignored,
        result=None if kind else {"ignored": f"no handler for {ev.eventname}"},
    )
