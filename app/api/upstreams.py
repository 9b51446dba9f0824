"""/api/upstreams: whether Moodle and CourseSales can be used now, and a probe on demand."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from app.api.deps import OPS_RESPONSES, RuntimeDep, SessionDep, require_ops
from app.jobs.probe import probe_all
from app.sync import upstreams

router = APIRouter(prefix="/api", tags=["operations"], dependencies=[Depends(require_ops)], responses=OPS_RESPONSES)


@router.get(
    "/upstreams",
    summary="Each upstream's state: ok, not_configured, unavailable or auth_failed (with since when, why, the fix)",
)
async def upstream_states(rt: RuntimeDep, session: SessionDep) -> dict[str, Any]:
    return upstreams.report(rt.settings, await upstreams.load(session))


@router.post(
    "/upstreams/probe",
    summary="Probe every configured upstream now; one that answers again has its waiting work queued at once",
)
async def probe_now(rt: RuntimeDep) -> dict[str, Any]:
    return await probe_all(rt, "api", force=True)
