"""Liveness and readiness."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import RuntimeDep
from app.db import backlog
from app.db.schema import schema_problem
from app.db.types import utcnow
from app.metrics import exposition
from app.sync import upstreams

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Ready to accept webhooks",
    description="200 exactly when the database answers and is migrated to this version (webhooks are accepted "
    "without Redis); Redis, Moodle and CourseSales are reported in the body.",
    responses={503: {"description": "the database does not answer, or is not migrated (the body names the command)"}},
)
async def readyz(rt: RuntimeDep) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        problem = await schema_problem(rt.engine)
        checks["database"] = {"ok": True} if problem is None else {"ok": False, "error": problem}
    except Exception as exc:  # any failure means not ready; the type is enough for an operator
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    if checks["database"]["ok"] and rt.keyring in ("waiting", "refused"):
        checks["database"] = {"ok": False, "error": f"keyring {rt.keyring}: see the log (keyring.*)"}
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
    try:
        async with rt.sessions() as session:
            states = upstreams.report(s, await upstreams.load(session))
    except Exception:  # the database check above says why
        states = {}
    for name, state in states.items():
        checks[name]["state"] = state["state"]
        checks[name].update({k: v for k, v in state.items() if k in ("since", "reason", "fix")})
    checks["inbound"] = s.inbound_methods()
    checks["mode"] = s.mode
    ok = checks["database"]["ok"]
    return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={401: {"description": "metrics.access = token and no valid ops bearer token (SYNC_API__TOKEN)"}},
)
async def metrics(rt: RuntimeDep) -> PlainTextResponse:
    """Counters of every process on this host (the API's, its workers'), plus the open inbox and the queue as they
    are now (read at scrape time).

    ``sync_events`` counts the open events and those waiting for a person (failed, needs review), by status; how
    many finished is ``sync_events_finished_total``. Reading it costs the same at a thousand events or millions."""
    async with rt.sessions() as s:
        now = await backlog.backlog(s, every_tenant=True)  # the deployment's inbox, every tenant's events
        slugs = await backlog.tenant_slugs(s)  # read once for both gauges of each tenant
        by_tenant = await backlog.open_by_tenant(s, slugs)
        problems = await backlog.upstream_problems_by_tenant(s, slugs)
        states = upstreams.report(rt.settings, await upstreams.load(s))
    oldest = (utcnow() - _aware(now.oldest_open)).total_seconds() if now.oldest_open else 0.0
    depth = await rt.queue.depth() if rt.queue is not None else None
    text = exposition(
        counts=now.counts, oldest_seconds=oldest, queue_depth=depth,
        upstreams={name: state["state"] for name, state in states.items()}, by_tenant=by_tenant,
        tenant_problems=problems,
    )  # fmt: skip
    return PlainTextResponse(text.decode(), media_type=CONTENT_TYPE_LATEST)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
