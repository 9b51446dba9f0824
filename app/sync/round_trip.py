"""The round-trip check (issue 24): every kind of call the sync makes, done once against the configured Moodle on
scratch objects of its own, and CourseSales read; a report line per step with what a refusal means and its fix.

A token lists its functions but not its capabilities: only doing the work shows a role that cannot restore a course
or read completions. Safe on a live site: it does not start while the shared upstream state says Moodle cannot be
used, nor when its first call answers maintenance; one runs at a time (the ``round_trip`` lease, renewed before each
step for that step's timeout, so a killed run frees it soon); it never deletes and touches only the scratch user and
courses (app/sync/round_trip_moodle.py), which a run interrupted anywhere leaves for the next one to find and reuse.
Each result is kept as a ``runs`` row of kind ``round_trip`` (steps in ``plan``); a row still ``running`` when the
next run takes the lease was interrupted, and is marked so.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db import leases
from app.db.models import Run, RunStatus, RunTrigger
from app.db.types import utcnow
from app.runtime import Runtime
from app.sync import round_trip_coursesales as cs
from app.sync import round_trip_enrol as en
from app.sync import round_trip_moodle as mo
from app.sync import upstreams
from app.sync.round_trip_explain import explain
from app.sync.round_trip_model import (
    BLOCKED,
    FAILED,
    KIND,
    SKIPPED,
    Ctx,
    NotApplicable,
    Report,
    ScratchNames,
    Step,
    StepProblem,
    StepResult,
)  # fmt: skip
from app.upstream import UpstreamError

log = structlog.get_logger(__name__)
LEASE = "round_trip"
LEASE_MARGIN = 30.0  # seconds the lease outlives a step's timeout
MAINTENANCE = "Moodle is in maintenance"
M, C = upstreams.MOODLE, upstreams.COURSESALES
SITE = "moodle.site_info"

STEPS: tuple[Step, ...] = (
    Step(SITE, M, "core_webservice_get_site_info", mo.site_info),  # first: a 503 here and nothing else runs
    Step("coursesales.login", C, "check_login", cs.login),
    Step("coursesales.categories", C, "course_categories", cs.categories, ("coursesales.login",)),
    Step("coursesales.course_dates", C, "iter_course_dates", cs.course_dates, ("coursesales.login",)),
    Step("coursesales.completion_step", C, "execute_step", cs.completion_step, ("coursesales.login",)),
    Step("moodle.user.lookup", M, "core_user_get_users_by_field", mo.user_lookup, (SITE,)),
    Step("moodle.user.write", M, "core_user_create_users", mo.user_write, ("moodle.user.lookup",)),
    Step("moodle.course.lookup", M, "core_course_get_courses_by_field", mo.course_lookup, (SITE,)),
    Step("moodle.course.write", M, "core_course_create_courses", mo.course_write,
         ("moodle.course.lookup", "coursesales.categories")),
    Step("moodle.template.lookup", M, "core_course_get_courses_by_field", mo.template_lookup,
         (SITE, "coursesales.categories")),
    Step("moodle.copy.lookup", M, "core_course_get_courses_by_field", mo.copy_lookup, ("moodle.template.lookup",)),
    Step("moodle.copy.duplicate", M, "core_course_duplicate_course", mo.copy_duplicate, ("moodle.copy.lookup",),
         slow=True),
    Step("moodle.copy.idnumber", M, "core_course_update_courses", mo.copy_idnumber, ("moodle.copy.duplicate",)),
    Step("moodle.enrol", M, "enrol_manual_enrol_users", en.enrol, ("moodle.user.write", "moodle.course.write")),
    Step("moodle.enrolled.read", M, "core_enrol_get_enrolled_users", en.enrolled_read, ("moodle.enrol",)),
    Step("moodle.completion.read", M, "core_completion_get_course_completion_status", en.completion_read,
         ("moodle.enrol",)),
    Step("moodle.user.courses", M, "core_enrol_get_users_courses", en.users_courses, ("moodle.enrol",)),
    Step("moodle.enrol.suspend", M, "enrol_manual_enrol_users", en.enrol_suspend, ("moodle.enrol",)),
    Step("moodle.unenrol", M, "enrol_manual_unenrol_users", en.unenrol, ("moodle.enrol",)),
    Step("moodle.user.suspend", M, "core_user_update_users", en.user_suspend, ("moodle.user.write",)),
)  # fmt: skip


@dataclass(frozen=True)
class Timeouts:
    step: float  # every step but a duplication
    slow: float  # a course duplication (a whole backup and restore)


def timeouts_of(rt: Runtime) -> Timeouts:
    s = rt.settings
    call = max(s.moodle.timeout_seconds, s.coursesales.timeout_seconds)
    return Timeouts(step=2 * call + 5, slow=s.moodle.duplicate_timeout_seconds + call)


class Runner:
    """Runs the steps in order, each under its timeout, skipping those whose needs did not pass."""

    def __init__(self, rt: Runtime, ctx: Ctx, timeouts: Timeouts, owner: str) -> None:
        self.rt, self.ctx, self.timeouts, self.owner = rt, ctx, timeouts, owner
        self.results: dict[str, StepResult] = {}
        self.halted: dict[str, str] = {}  # upstream (or "*") -> why none of its steps can run

    async def run(self, steps: Sequence[Step]) -> list[StepResult]:
        for step in steps:
            limit = self.timeouts.slow if step.slow else self.timeouts.step
            result = self._not_run(step)
            if result is None and not await self._renew(limit):
                self.halted["*"] = "the lease was lost: another round-trip check took over"
                result = self._not_run(step)
            self.results[step.name] = result or await self._one(step, limit)
        return list(self.results.values())

    def _not_run(self, step: Step) -> StepResult | None:
        why = self.halted.get("*") or self.halted.get(step.upstream)
        if why:
            return StepResult(step.name, step.upstream, step.call, BLOCKED, f"not run: {why}")
        for need in step.needs:
            got = self.results[need]
            if got.status in (FAILED, BLOCKED):
                return StepResult(step.name, step.upstream, step.call, BLOCKED, f"not run: {need} did not pass")
            if got.status == SKIPPED:
                return StepResult(step.name, step.upstream, step.call, SKIPPED, got.summary)
        return None

    async def _renew(self, limit: float) -> bool:
        async with self.rt.sessions() as s:
            held = await leases.acquire(s, LEASE, self.owner, limit + LEASE_MARGIN)
            await s.commit()
        return held

    async def _one(self, step: Step, limit: float) -> StepResult:
        started = time.monotonic()
        base = (step.name, step.upstream, step.call)
        try:
            done = await asyncio.wait_for(step.run(self.ctx), limit)
            result = StepResult(*base, done.status, done.summary, done.meaning, done.fix)
        except NotApplicable as exc:
            result = StepResult(*base, SKIPPED, str(exc))
        except StepProblem as exc:
            result = StepResult(*base, FAILED, exc.summary, exc.meaning, exc.fix)
        except TimeoutError:
            fix = "see the upstream's load and error log; run the check again"
            result = StepResult(*base, FAILED, f"no answer within {limit:g} s", f"{step.call} is too slow", fix)
        except UpstreamError as exc:
            said = explain(exc, getattr(exc, "function", "") or step.call, role_id=self.ctx.settings.enrolments.role_id)
            result = StepResult(*base, FAILED, said.summary, said.meaning, said.fix)
            if said.halt:  # the first call answering maintenance: the check does not start at all
                self.halted["*" if not self.results and said.halt == MAINTENANCE else step.upstream] = said.halt
        except Exception as exc:  # a broken step is a failed line, never a lost report; the type only (secrets)
            log.exception("round_trip.step_broke", step=step.name)
            result = StepResult(*base, FAILED, f"the step broke: {type(exc).__name__}", "a fault of the check itself")
        seconds = round(time.monotonic() - started, 3)
        return StepResult(**{**result.__dict__, "seconds": seconds})


async def run_round_trip(
    rt: Runtime, *, trigger: str = RunTrigger.cli, steps: Sequence[Step] = STEPS, timeouts: Timeouts | None = None
) -> Report:
    """Run the check once (refused when another runs or Moodle cannot be used) and keep its report."""
    started = utcnow()
    if not rt.settings.moodle.configured:
        why = "Moodle is not configured: set SYNC_MOODLE__URL and SYNC_MOODLE__TOKEN"
        return Report(started, started, refused=why, refused_code="not_configured")
    timeouts = timeouts or timeouts_of(rt)
    owner = f"round-trip-{uuid.uuid4().hex[:12]}"
    async with rt.sessions() as s:
        if not await leases.acquire(s, LEASE, owner, timeouts.step + LEASE_MARGIN):
            why = "another round-trip check is running: one at a time"
            return Report(started, utcnow(), refused=why, refused_code="busy")
        state = (await upstreams.load(s)).get(M)
        await _mark_interrupted(s)
        run = Run(kind=KIND, trigger=trigger, status=RunStatus.running)
        s.add(run)
        await s.commit()
        run_id = run.id
    try:
        report = await _checked(rt, owner, steps, timeouts, started, state)
        report.run_id = run_id
        await _store(rt, run_id, report)
    finally:
        async with rt.sessions() as s:
            await leases.release(s, LEASE, owner)
            await s.commit()
    log.info("round_trip.finished", run_id=run_id, ok=report.ok, counts=report.counts())
    return report


async def _checked(
    rt: Runtime, owner: str, steps: Sequence[Step], timeouts: Timeouts, started: Any, state: Any
) -> Report:
    if state is not None and state.state == upstreams.UNAVAILABLE:
        why = f"{state.reason}: the check does not start while Moodle cannot be used; run it again once it answers"
        return Report(started, utcnow(), refused=why, refused_code="unavailable")
    configured = rt.settings.coursesales.configured
    ctx = Ctx(
        rt.settings, rt.moodle, rt.coursesales if configured else None, ScratchNames(rt.settings.moodle.scratch_prefix)
    )
    runner = Runner(rt, ctx, timeouts, owner)
    results = await runner.run(steps)
    report = Report(started, utcnow(), results, ctx.release, ctx.version)
    if runner.halted.get("*") == MAINTENANCE:
        report.refused = f"{MAINTENANCE} (its first call answered so): nothing was done; run the check again later"
        report.refused_code = "maintenance"
    return report


async def _mark_interrupted(session: AsyncSession) -> None:
    """A row still running while this run holds the lease belongs to a run that stopped mid-way."""
    await session.execute(
        update(Run)
        .where(col(Run.kind) == KIND, col(Run.status) == RunStatus.running)
        .values(status=RunStatus.failed, finished_at=utcnow(), error="interrupted: the next run reused its objects")
        .execution_options(synchronize_session=False)
    )


async def _store(rt: Runtime, run_id: int, report: Report) -> None:
    async with rt.sessions() as s:
        row = await s.get_one(Run, run_id)
        row.status = RunStatus.done if report.ok else RunStatus.stopped if report.refused else RunStatus.failed
        row.finished_at, row.error = report.finished_at, report.first_problem()
        row.counts, row.plan = report.counts(), report.steps_json()
        row.progress = {"moodle_release": report.moodle_release, "moodle_version": report.moodle_version,
                        "refused": report.refused, "refused_code": report.refused_code}  # fmt: skip
        await s.commit()


async def stored_round_trip(session: AsyncSession, run_id: int | None = None) -> tuple[str, Report] | None:
    """A kept run's status and report (the latest when ``run_id`` is None; a running one has no steps yet)."""
    query = select(Run).where(col(Run.kind) == KIND)
    query = query.where(col(Run.id) == run_id) if run_id is not None else query.order_by(col(Run.id).desc())
    row = (await session.execute(query.limit(1))).scalars().first()
    if row is None:
        return None
    kept = row.progress or {}
    report = Report(
        row.created_at,
        row.finished_at or row.created_at,
        [StepResult(**step) for step in row.plan or []],
        kept.get("moodle_release"),
        kept.get("moodle_version"),
        kept.get("refused") or (row.error if row.status == RunStatus.failed and not row.plan else None),
        kept.get("refused_code"),
        row.id,
    )
    return row.status, report
