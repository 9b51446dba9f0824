"""Reconcile runs: start one (optionally dry), follow its progress, read its plan."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from sqlalchemy import func, select
from sqlmodel import col

from app.api.deps import MAX_OFFSET, NOT_FOUND, OPS_RESPONSES, IdPath, RuntimeDep, SessionDep, require_ops
from app.api.schemas import Page, ReconcileRequest, RunDetail, RunOut
from app.api.unit_of_work import UnitOfWorkDep
from app.db.models import Run, RunStatus, RunTrigger
from app.sync import operations
from app.sync.readiness import unconfigured

router = APIRouter(prefix="/api", tags=["reconcile"], dependencies=[Depends(require_ops)], responses=OPS_RESPONSES)


@router.post(
    "/reconcile",
    response_model=RunOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start a reconcile",
    responses={
        503: {"description": "the queue (Redis) is unavailable; nothing was started"},
        409: {"description": "Moodle or CourseSales is not configured yet"},
    },
)
async def start_reconcile(body: ReconcileRequest, rt: RuntimeDep, uow: UnitOfWorkDep) -> RunOut:
    """Compare CourseSales, our links and Moodle, and queue only the differences; a dry run returns the plan."""
    missing = unconfigured(rt.settings)
    if missing:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"{' and '.join(missing)} not configured yet: nothing to reconcile"
        )
    run = Run(dry_run=body.dry_run, trigger=RunTrigger.api, status=RunStatus.queued)
    uow.session.add(run)
    await uow.session.flush()
    operations.audit(uow.session, actor=uow.actor, action="reconcile.start", target=f"run:{run.id}",
                     note="dry run" if body.dry_run else None)  # fmt: skip
    await uow.complete()  # stored before its job can start
    if rt.queue is None or not await rt.queue.enqueue_reconcile(run.id):
        run.status, run.error = RunStatus.failed, "the queue is unavailable (Redis down?): try again"
        await uow.complete()
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the queue is unavailable (Redis down?): try again")
    return RunOut.model_validate(run, from_attributes=True)


@router.get("/runs", response_model=Page[RunOut], summary="Reconcile runs, newest first")
async def list_runs(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Page[RunOut]:
    reconciles = col(Run.kind) == "reconcile"  # round-trip checks keep their results here too: GET /api/check
    total = (await session.execute(select(func.count()).select_from(Run).where(reconciles))).scalar_one()
    rows = await session.execute(select(Run).where(reconciles).order_by(col(Run.id).desc()).limit(limit).offset(offset))
    return Page(items=[RunOut.model_validate(r, from_attributes=True) for r in rows.scalars()], total=total)


@router.get(
    "/runs/{run_id}",
    response_model=RunDetail,
    responses=NOT_FOUND,
    summary="One run with its progress, counts and plan",
)
async def get_run(run_id: IdPath, session: SessionDep) -> RunDetail:
    run = await session.get(Run, run_id)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run {run_id}")
    return RunDetail.model_validate(run, from_attributes=True)
