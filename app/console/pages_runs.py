"""Reconcile: start a dry run or a real one, follow its progress live, read its counts and (dry) its plan."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Query, Request
from starlette.responses import HTMLResponse, Response

from app.api import runs
from app.api.deps import MAX_OFFSET, IdPath, RuntimeDep, SessionDep
from app.api.schemas import ReconcileRequest, RunDetail
from app.console.actions import Failed, act
from app.console.auth import ChangeDep, Refused, SignedDep
from app.console.render import done, fragment, page

router = APIRouter(prefix="/console", include_in_schema=False)

# The phases a run reports (app.sync.reconcile), in order: the progress bar's steps.
PHASES = ("courses", "enrolments", "completions", "accounts")
FINISHED = frozenset({"done", "failed", "stopped"})
PLAN_SHOWN = 200  # per action; the whole plan is at GET /api/runs/{id}


def progress_of(run: RunDetail) -> dict[str, Any]:
    """Where a run stands, for the bar: the step of its phase among the phases it has, and what it says."""
    steps = PHASES if run.dry_run else PHASES[:-1]
    state = run.progress or {}
    phase = str(state.get("phase", ""))
    if run.status in FINISHED:
        at = len(steps)
    else:
        at = steps.index(phase) if phase in steps else 0
    detail = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in state.items() if k not in ("phase", "counts"))
    return {"value": at, "max": len(steps), "phase": phase or run.status, "detail": detail,
            "finished": run.status in FINISHED}  # fmt: skip


def plan_groups(plan: list[dict[str, Any]] | None) -> list[tuple[str, int, list[dict[str, Any]]]]:
    """A dry run's plan by action, the largest group first: (action, how many, the first PLAN_SHOWN)."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in plan or []:
        grouped[str(item.get("action", "?"))].append(item)
    ordered = sorted(grouped.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return [(action, len(items), items[:PLAN_SHOWN]) for action, items in ordered]


async def _run(session: SessionDep, run_id: int) -> RunDetail:
    try:
        return await runs.get_run(run_id, session)
    except HTTPException as exc:
        raise Refused(exc.status_code, str(exc.detail)) from exc


@router.get("/runs", response_class=HTMLResponse)
async def run_list(
    request: Request, session: SessionDep, user: SignedDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> HTMLResponse:  # fmt: skip
    found = await runs.list_runs(session, limit=20, offset=offset)
    return await page(request, session, "runs.html", user, found=found, offset=offset, page_size=20)


@router.post("/runs", response_model=None)
async def start(rt: RuntimeDep, user: ChangeDep, dry_run: Annotated[bool, Form()] = True) -> Response:
    try:
        run = await act(rt, user, lambda uow: runs.start_reconcile(ReconcileRequest(dry_run=dry_run), rt, uow))
    except Failed as exc:
        return done("/console/runs", f"Not started: {exc}", ok=False)
    return done(f"/console/runs/{run.id}", f"{'Dry run' if dry_run else 'Reconcile'} {run.id} started.")


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_page(request: Request, run_id: IdPath, session: SessionDep, user: SignedDep) -> HTMLResponse:
    run = await _run(session, run_id)
    return await page(request, session, "run.html", user, run=run, progress=progress_of(run),
                      groups=plan_groups(run.plan), shown=PLAN_SHOWN)  # fmt: skip


@router.get("/runs/{run_id}/progress", response_class=HTMLResponse)
async def run_progress(request: Request, run_id: IdPath, session: SessionDep, user: SignedDep) -> Response:
    """The bar, polled by htmx while the run goes on; once it has finished, the whole page is reloaded."""
    run = await _run(session, run_id)
    response = fragment(request, "_run_progress.html", run=run, progress=progress_of(run))
    if run.status in FINISHED:
        response.headers["HX-Refresh"] = "true"
    return response
