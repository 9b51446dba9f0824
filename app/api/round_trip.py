"""/api/check: `moodle-sync check` over HTTP; with ``{"round_trip": true}`` the round-trip check (app/sync/round_trip.py),
whose last result is kept and read back with GET."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import NOT_FOUND, OPS_RESPONSES, RuntimeDep, SessionDep, require_ops
from app.api.unit_of_work import UnitOfWorkDep
from app.checks import Finding, check_coursesales, check_moodle
from app.db.models import RunTrigger
from app.db.types import utcnow
from app.runtime import Runtime
from app.sync import operations
from app.sync.round_trip import run_round_trip, stored_round_trip
from app.sync.round_trip_model import FAILED, OK, WARN, Report, StepResult

router = APIRouter(prefix="/api", tags=["operations"], dependencies=[Depends(require_ops)], responses=OPS_RESPONSES)
StepStatus = Literal["ok", "warn", "skipped", "assumed", "failed", "blocked"]
# Why a round trip did not start, as an HTTP status: nothing was done in Moodle.
REFUSED = {"busy": status.HTTP_409_CONFLICT, "not_configured": status.HTTP_409_CONFLICT,
           "unavailable": status.HTTP_503_SERVICE_UNAVAILABLE, "maintenance": status.HTTP_503_SERVICE_UNAVAILABLE}  # fmt: skip


class CheckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"round_trip": True}})

    round_trip: bool = Field(
        False,
        description="true: do every kind of call the sync makes on the check's scratch user and courses in Moodle "
        "(made once, reused, left suspended and hidden; nothing deleted) and read CourseSales; the result is kept. "
        "false: only read the token's functions and the CourseSales login, as `moodle-sync check`",
    )


class StepOut(BaseModel):
    name: str = Field(description="e.g. moodle.copy.duplicate")
    upstream: Literal["moodle", "coursesales"]
    call: str = Field(description="the Moodle function or CourseSales operation the step makes")
    status: StepStatus = Field(description="ok, warn, skipped (not used here), assumed: passing; failed, blocked: not")
    summary: str = Field(description="what it did, the upstream's answer, or why it did not run")
    meaning: str | None = Field(description="what the answer means for the sync")
    fix: str | None
    seconds: float


class CheckOut(BaseModel):
    round_trip: bool
    run_id: int | None = Field(description="the kept result's run (kind round_trip in /api/runs)")
    status: str | None = Field(description="the kept run's: running, done, failed or stopped (refused)")
    ok: bool = Field(description="true only when every step passed (the CLI's exit code 0)")
    refused: str | None = Field(description="why it did not start, when it did not")
    refused_code: Literal["busy", "not_configured", "unavailable", "maintenance"] | None
    moodle_release: str | None
    moodle_version: str | None
    started_at: datetime
    finished_at: datetime
    steps: list[StepOut]

    @classmethod
    def of(cls, report: Report, *, run_status: str | None, round_trip: bool = True) -> CheckOut:
        return cls(
            round_trip=round_trip, run_id=report.run_id, status=run_status, ok=report.ok, refused=report.refused,
            refused_code=report.refused_code, moodle_release=report.moodle_release,
            moodle_version=report.moodle_version, started_at=report.started_at, finished_at=report.finished_at,
            steps=[StepOut.model_validate(s, from_attributes=True) for s in report.steps],
        )  # fmt: skip


@router.post(
    "/check",
    summary="Check Moodle and CourseSales now; round_trip: do the sync's every kind of call on scratch objects",
    responses={
        409: {"description": "another round-trip check is running, or Moodle is not configured: nothing was done"},
        503: {"description": "Moodle is in maintenance or cannot be used: nothing was done (the refusal is kept)"},
    },
)
async def run_check(body: CheckRequest, rt: RuntimeDep, uow: UnitOfWorkDep) -> CheckOut:
    """A round trip runs within the request (a course duplication can take minutes: moodle.duplicate_timeout_seconds);
    its result is kept, so GET /api/check shows it to anyone who did not wait."""
    if not body.round_trip:
        return await _plain(rt)
    report = await run_round_trip(rt, trigger=RunTrigger.api)
    if report.run_id is not None:
        operations.audit(uow.session, actor=uow.actor, action="check.round_trip", target=f"run:{report.run_id}",
                         note="ok" if report.ok else report.first_problem())  # fmt: skip
        await uow.complete()
    if report.refused_code in REFUSED:
        raise HTTPException(REFUSED[report.refused_code], report.refused)
    async with rt.sessions() as s:
        kept = await stored_round_trip(s, report.run_id)
    assert kept is not None  # stored above
    return CheckOut.of(kept[1], run_status=kept[0])


@router.get("/check", responses=NOT_FOUND, summary="The last round-trip check's result (kept, not run again)")
async def last_check(session: SessionDep) -> CheckOut:
    kept = await stored_round_trip(session)
    if kept is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no round-trip check has run yet: POST /api/check")
    return CheckOut.of(kept[1], run_status=kept[0])


async def _plain(rt: Runtime) -> CheckOut:
    """`moodle-sync check`'s findings as steps (not kept)."""
    started = utcnow()
    if not rt.settings.moodle.configured:
        raise HTTPException(status.HTTP_409_CONFLICT, "Moodle is not configured: set SYNC_MOODLE__URL and __TOKEN")
    findings = [(f, "moodle") for f in await check_moodle(rt.moodle)]
    if rt.settings.coursesales.configured:
        findings += [(f, "coursesales") for f in await check_coursesales(rt.coursesales, rt.settings.courses)]
    steps = [_step(f, upstream, n) for n, (f, upstream) in enumerate(findings, 1)]
    report = Report(started, utcnow(), steps)
    return CheckOut.of(report, run_status=None, round_trip=False)


def _step(finding: Finding, upstream: str, n: int) -> StepResult:
    level = {"ok": OK, "warn": WARN}.get(finding.level, FAILED)
    return StepResult(f"{upstream}.check.{n}", upstream, "", level, finding.message, None, finding.fix)
