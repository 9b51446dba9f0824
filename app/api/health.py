"""Liveness and readiness."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select, text

from app.api.deps import RuntimeDep
from app.db.models import OPEN_STATUSES, Event, EventStatus
from app.db.types import utcnow
from app.metrics import EVENTS_BY_STATUS, OLDEST_OPEN_SECONDS, QUEUE_DEPTH, REGISTRY

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Ready to accept webhooks",
    description="200 exactly when the database answers (webhooks are accepted without Redis); "
    "Redis, Moodle and CourseSales are reported in the body.",
    responses={503: {"description": "the database does not answer"}},
)
async def readyz(rt: RuntimeDep) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        async with rt.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
    except Exception as exc:  # any failure means not ready; the type is enough for an operator
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    checks["redis"] = {"ok": bool(rt.queue is not None and await rt.queue.ping())}
    s = rt.settings
    checks["moodle"] = (
        {"configured": True, "url": s.moodle.url}
        if s.moodle.configured
        else {
            "configured": False,
            "detail": "Moodle is not configured yet: set SYNC_MOODLE__URL and SYNC_MOODLE__TOKEN",
        }
    )
    checks["coursesales"] = (
        {"configured": True}
        if s.coursesales.configured
        else {
            "configured": False,
            "detail": "CourseSales is not configured yet: set SYNC_COURSESALES__URL, __USERNAME and __PASSWORD",
        }
    )
    checks["inbound"] = s.inbound_methods()
    checks["mode"] = s.mode
    ok = checks["database"]["ok"]
    return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(rt: RuntimeDep) -> PlainTextResponse:
    """Counters of this process, plus the inbox and queue as they are now (read at scrape time)."""
    async with rt.sessions() as s:
        counts = dict((await s.execute(select(Event.status, func.count()).group_by(Event.status))).all())
        oldest = (
            await s.execute(select(func.min(Event.created_at)).where(Event.status.in_(list(OPEN_STATUSES))))
        ).scalar_one_or_none()
    for status_ in EventStatus:
        EVENTS_BY_STATUS.labels(status_.value).set(counts.get(status_.value, 0))
    OLDEST_OPEN_SECONDS.set((utcnow() - _aware(oldest)).total_seconds() if oldest else 0)
    depth = await rt.queue.depth() if rt.queue is not None else None
    QUEUE_DEPTH.set(depth if depth is not None else -1)
    return PlainTextResponse(generate_latest(REGISTRY).decode(), media_type=CONTENT_TYPE_LATEST)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
