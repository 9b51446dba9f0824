"""The sweeper: re-queues every accepted-but-unfinished event whose job is missing (Redis lost it, or was down)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import and_, or_, select
from sqlmodel import col

from app.db import inbox, leases
from app.db.engine import SessionFactory
from app.db.models import Event, EventStatus
from app.db.tenancy import ALL_TENANTS
from app.db.tenants import Tenant
from app.db.types import utcnow
from app.events.registry import SLOW_KINDS
from app.jobs.queue import Queue
from app.loops import pause
from app.runtime import Runtime
from app.sync import operations

log = structlog.get_logger(__name__)
LEASE = "sweeper"
# An event just accepted is being queued by its request: leave it this long before helping.
GRACE = timedelta(seconds=5)


async def sweep(rt: Runtime, owner: str, *, grace: timedelta = GRACE, limit: int = 5000) -> int:
    """Enqueue the job of every open event that should be in the queue; safe to repeat (job ids dedupe)."""
    if rt.queue is None:
        return 0
    async with rt.sessions() as s:
        if not await leases.acquire(s, LEASE, owner, rt.settings.jobs.sweep_interval_seconds * 2):
            await s.rollback()
            return 0
        purged = await operations.purge(s, days=rt.settings.retention.days)
        await s.commit()
        if purged:
            log.info("retention.purged", events=purged)
    count = await requeue(rt.sessions, rt.queue, grace=grace, limit=limit, every_tenant=True)
    if count:
        log.info("sweeper.requeued", count=count)
    return count


async def release_held(sessions: SessionFactory, queue: Queue | None, why: str) -> int:
    """Queue at once every open event that waits to run: the one path for each "held, now free" moment (a resume, an
    upstream usable again, an upstream configured at start-up), in the sweeper's order, in one pipelined enqueue.
    Safe beside the sweeper: job ids dedupe, and a repeated job finds its event taken."""
    count = await requeue(sessions, queue, grace=timedelta(0))
    if count:
        log.info("jobs.released", count=count, why=why)
    return count


async def requeue(
    sessions: SessionFactory, queue: Queue | None, *, grace: timedelta, limit: int = 5000, every_tenant: bool = False
) -> int:
    """Enqueue the job of every open event that should be in the queue, oldest first; returns how many. The sweeper
    walks ``every_tenant``'s events (each job finds its tenant); a release walks its own tenant's."""
    if queue is None:
        return 0
    now = utcnow()
    due = (
        select(col(Event.id), col(Event.attempts), col(Event.kind))
        .where(
            or_(
                and_(
                    col(Event.status).in_([EventStatus.accepted, EventStatus.queued]),
                    col(Event.updated_at) < now - grace,
                ),
                and_(col(Event.status) == EventStatus.retrying, col(Event.next_attempt_at) < now - grace),
                and_(col(Event.status) == EventStatus.running, col(Event.lease_until) < now),
            )
        )
        .order_by(col(Event.id))
        .limit(limit)
        # A disabled tenant's events wait, unqueued, until it is enabled again.
        .where(col(Event.tenant_id).not_in(select(col(Tenant.id)).where(col(Tenant.enabled).is_(False))))
        .execution_options(**(ALL_TENANTS if every_tenant else {}))
    )
    slow = col(Event.kind).in_(sorted(SLOW_KINDS))
    rows: list[Any] = []
    async with sessions() as s:
        # Each lane its own oldest: the course dates of a backlog start beside its first 5,000 contacts, not after.
        for lane in (~slow, slow):
            rows += (await s.execute(due.where(lane))).all()
    queued = await queue.enqueue_events([(r.id, r.attempts, r.kind) for r in rows])
    if queued:
        async with sessions() as s:
            await inbox.mark_queued(s, queued)
            await s.commit()
    return len(queued)


async def run_forever(rt: Runtime) -> None:
    """The sweeper loop of one worker; the lease keeps it to one worker at a time."""
    owner = f"sweeper-{uuid.uuid4().hex[:12]}"
    while True:
        try:
            await sweep(rt, owner)
        except Exception:  # the loop must outlive a database or Redis hiccup
            log.exception("sweeper.failed")
        await pause(rt.settings.jobs.sweep_interval_seconds)
