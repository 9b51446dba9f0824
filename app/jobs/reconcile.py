"""Reconcile runs as jobs: one at a time across all workers (a lease row), periodic and on demand."""

from __future__ import annotations

import random
import uuid
from typing import Any

import structlog
from sqlalchemy import select
from sqlmodel import col

from app.coursesales.errors import CourseSalesError
from app.db import leases
from app.db.models import Lease, Run, RunStatus, RunTrigger
from app.db.tenancy import ALL_TENANTS
from app.db.tenants import Tenant
from app.db.types import utcnow
from app.jobs.tasks import enqueue_internal
from app.loops import pause
from app.moodle.errors import MoodleError
from app.runtime import Runtime
from app.sync.reconcile import Progress, Reconciler

log = structlog.get_logger(__name__)
LEASE = "reconcile"
LEASE_SECONDS = 3600
CRON_LEASE = "reconcile.cron"


async def create_run(rt: Runtime, *, dry_run: bool, trigger: str) -> Run:
    async with rt.sessions() as s:
        run = Run(dry_run=dry_run, trigger=trigger, status=RunStatus.queued)
        s.add(run)
        await s.commit()
        return run


async def execute(rt: Runtime, run_id: int, *, progress: Progress | None = None) -> Run:
    """Run one reconcile under the lease; another one running means this one is stopped, not queued twice."""
    owner = f"reconcile-{uuid.uuid4().hex[:12]}"
    async with rt.sessions() as s:
        run = await s.get_one(Run, run_id)
        if run.status != RunStatus.queued:
            return run
        if not await leases.acquire(s, LEASE, owner, LEASE_SECONDS):
            run.status, run.error, run.finished_at = RunStatus.stopped, "another reconcile is running", utcnow()
            await s.commit()
            return run
        run.status = RunStatus.running
        await s.commit()

    async def report_progress(state: dict[str, Any]) -> None:
        async with rt.sessions() as s:
            row = await s.get_one(Run, run_id)
            row.progress = state
            await s.commit()
        if progress is not None:
            await progress(state)

    reconciler = Reconciler(
        sessions=rt.sessions,
        moodle=rt.moodle,
        coursesales=rt.coursesales,
        settings=rt.settings,
        progress=report_progress,
    )
    try:
        report = await reconciler.run(dry_run=run.dry_run)
        status, error = report.status, report.error
    except (MoodleError, CourseSalesError) as exc:  # an upstream refused or is away: the reason, no traceback
        log.warning("reconcile.upstream_failed", run_id=run_id, error=str(exc))
        report, status, error = reconciler.report, RunStatus.failed, str(exc)
    except Exception as exc:  # a failed run is recorded with its reason, then the lease is freed
        log.exception("reconcile.failed", run_id=run_id)
        report, status, error = reconciler.report, RunStatus.failed, f"{type(exc).__name__}: {exc}"
    async with rt.sessions() as s:
        run = await s.get_one(Run, run_id)
        run.status, run.error, run.finished_at = status, error, utcnow()
        run.counts, run.plan = dict(report.counts), report.plan
        await leases.release(s, LEASE, owner)
        await s.commit()
    await enqueue_internal(rt)
    log.info("reconcile.finished", run_id=run_id, status=status, counts=dict(report.counts))
    return run


async def reconcile_job(ctx: dict[str, Any], run_id: int) -> str:
    """arq entry point: the run is its tenant's."""
    home: Runtime = ctx["runtime"]
    rt, exists = await home.hub.owner_of(Run, run_id)
    if rt is None:
        return "tenant disabled" if exists else "missing"
    run = await execute(rt, run_id)
    return run.status


async def run_tenants_periodically(home: Runtime, *, tick_seconds: float = 60) -> None:
    """The periodic reconcile of the registered tenants, each at its own interval: every tick, a tenant whose
    "reconcile.cron" lease (its own) has run out is due; whichever worker takes the lease runs it. A tenant's first
    turn is placed at random within its first interval, so that tenants registered together (a new hub, a
    migration) are spread over it instead of all run at the first tick. The home tenant keeps its own loop
    (run_periodically)."""
    owner = f"cron-{uuid.uuid4().hex[:12]}"
    while True:
        await pause(tick_seconds)
        try:  # the tenants due: enabled, and without a live "reconcile.cron" lease of their own (one read)
            turns = select(col(Lease.tenant_id)).where(col(Lease.name) == CRON_LEASE)
            held = turns.where(col(Lease.expires_at) > utcnow())
            tenants = await home.hub.with_work(
                select(col(Tenant.id)).where(col(Tenant.enabled), col(Tenant.id).not_in(held))
            )
            async with home.sessions() as s:
                had_turns = set((await s.execute(turns.execution_options(**ALL_TENANTS))).scalars())
        except Exception:
            log.exception("reconcile.cron.tenants_failed")
            continue
        for rt in tenants:
            minutes = rt.settings.reconcile.interval_minutes
            runs = minutes > 0 and rt.settings.moodle.configured and rt.settings.coursesales.configured
            first = runs and rt.tenant_id not in had_turns
            # Held for the interval (the first: until a random point in it); one that does not run: an hour.
            spread = random.uniform(tick_seconds, minutes * 60)  # noqa: S311 (a schedule, not a secret)
            seconds = spread if first else minutes * 60 - 5 if runs else 3600
            try:
                async with rt.sessions() as s:
                    mine = await leases.acquire(s, CRON_LEASE, owner, seconds)
                    await s.commit()
                if not runs or first:
                    continue
                if mine:
                    run = await create_run(rt, dry_run=False, trigger=RunTrigger.cron)
                    await execute(rt, run.id)
            except Exception:  # one tenant's failed run must not stop the others'
                log.exception("reconcile.cron.failed", tenant=rt.slug)


async def run_periodically(rt: Runtime) -> None:
    """The periodic reconcile of one worker; the lease keeps it to one worker at a time."""
    minutes = rt.settings.reconcile.interval_minutes
    if minutes <= 0:
        return
    owner = f"cron-{uuid.uuid4().hex[:12]}"
    while True:
        await pause(minutes * 60)
        try:
            async with rt.sessions() as s:
                # Held for the whole interval: whichever worker wakes first runs it, the others skip.
                mine = await leases.acquire(s, "reconcile.cron", owner, minutes * 60 - 5)
                await s.commit()
            if mine and rt.settings.moodle.configured and rt.settings.coursesales.configured:
                run = await create_run(rt, dry_run=False, trigger=RunTrigger.cron)
                await execute(rt, run.id)
        except Exception:  # the loop must outlive a failed run
            log.exception("reconcile.cron.failed")
