"""/api/checks: the console's "is all well?" tiles, asked live (app/health_report.py), all at once or one by one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from app.api.deps import OPS_RESPONSES, RuntimeDep, require_ops
from app.health_report import DEFAULT_TIMEOUT, Check, CheckName, run_checks

router = APIRouter(prefix="/api", tags=["operations"], dependencies=[Depends(require_ops)], responses=OPS_RESPONSES)

TimeoutQuery = Annotated[
    float,
    Query(gt=0, le=30, description="seconds each check may take; one that takes longer is red, 'did not answer'"),
]


class CheckOut(BaseModel):
    name: CheckName
    ok: bool | None = Field(description="true: green; false: red; null: not configured")
    summary: str = Field(description="one plain line")
    details: list[str] = Field(description="what is wrong, each with its fix (for Moodle: `moodle-sync check`)")
    since: datetime = Field(
        description="when it entered this state: the shared upstream state where it records the fault, else the "
        "first time this API process saw it (per process, reset on restart)"
    )
    checked_at: datetime
    seconds: float = Field(description="how long the check took")

    @classmethod
    def of(cls, check: Check) -> CheckOut:
        return cls.model_validate(check, from_attributes=True)


class ChecksOut(BaseModel):
    checks: list[CheckOut]
    ok: bool = Field(description="true when no check is red (a check not configured is not red)")


@router.get(
    "/checks",
    summary="Is all well? The database, Redis, Moodle and CourseSales checked now, concurrently, each bounded",
)
async def all_checks(rt: RuntimeDep, timeout: TimeoutQuery = DEFAULT_TIMEOUT) -> ChecksOut:
    checks = await run_checks(rt, timeout=timeout)
    return ChecksOut(checks=[CheckOut.of(c) for c in checks], ok=all(c.ok is not False for c in checks))


@router.get(
    "/checks/{name}",
    summary="One check now (database, redis, moodle or coursesales): the console loads each tile on its own",
)
async def one_check(name: CheckName, rt: RuntimeDep, timeout: TimeoutQuery = DEFAULT_TIMEOUT) -> CheckOut:
    (check,) = await run_checks(rt, timeout=timeout, names=(name,))
    return CheckOut.of(check)
