"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.deps import RuntimeDep

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
