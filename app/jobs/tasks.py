"""Thin tasks: claim events, hand them to the rules in app.sync, record outcomes, schedule retries."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.coursesales.errors import CourseSalesError
from app.db import claim, inbox
from app.db.inbox import Outcome
from app.db.models import OPEN_STATUSES, Event, EventStatus
from app.db.types import utcnow
from app.events.registry import Family, Source, kinds_of, metric_label, spec
from app.jobs import fairness, gathering
from app.jobs.runners import COURSE_WAIT, GATHERED, RUNNERS, outcome_for_failure
from app.metrics import EVENTS_FINISHED, JOB_SECONDS
from app.moodle.errors import MoodleError
from app.notify.alerts import raise_alert
from app.runtime import Runtime
from app.sync import operations, upstreams
from app.sync.intake import add_request
from app.sync.readiness import waiting_for

log = structlog.get_logger(__name__)

# A job drains what is ready of its kinds in batches, then stops: the rest waits for its own jobs.
MAX_ROUNDS = 20


async def process_event(ctx: dict[str, Any], event_id: int) -> str:
    """arq entry point: the event runs in its tenant's runtime."""
    home: Runtime = ctx["runtime"]
    rt, exists = await home.hub.owner_of(Event, event_id)
    if rt is None:
        # A disabled tenant's event stays as it is (the sweeper leaves it alone until the tenant is enabled).
        return "tenant disabled" if exists else "missing"
    return await run_event(rt, event_id, home=home)


async def run_event(rt: Runtime, event_id: int, *, home: Runtime | None = None) -> str:
    """Process the event and whatever else of its kinds is ready, in batches. ``home``: the process's runtime, which
    takes turns between tenants (app.jobs.fairness) when more than one has work waiting."""
    async with rt.sessions() as s:
        event = await s.get(Event, event_id)
        if event is None:
            return "missing"
        kind = event.kind
        settled = _settled_elsewhere(event)
    # Every job start is a turn, even a job whose own event another round took: a backlog leaves thousands of those
    # in the queue, ahead of the other tenants' own jobs.
    turn = None
    if home is not None:
        turn = await fairness.turn(home, rt)
        own = event_id if settled is None else None  # a taken event is not queued again
        if turn.runtime is not rt and await fairness.serve(home, turn.runtime, kind, rt, own, run=_run_own):
            return f"served tenant {turn.runtime.slug}'s turn" + (f" ({settled})" if settled else "")
    if settled is not None:
        # Another job's round took it (a round drains a batch): this job's work is done, at the cost of one read.
        return settled
    # While other tenants wait, one round, then the next one's turn.
    rounds = 1 if turn is not None and turn.shared else MAX_ROUNDS
    with fairness.working(home, rt.tenant_id):
        return await _run_own(rt, event_id, kind, rounds, home=home)


async def _run_own(rt: Runtime, event_id: int, kind: str, rounds: int, *, home: Runtime | None = None) -> str:
    reason = waiting_for(rt.settings, kind, await rt.upstream_states.get(rt.sessions))
    if reason is not None:
        # Kept in the inbox, saying why on the event itself; the sweeper queues it again, and after a restart with
        # the upstream configured it runs.
        async with rt.sessions() as s:
            news = await inbox.mark_waiting(s, event_id, reason)
            await s.commit()
        if news:
            log.warning("jobs.waiting", event_id=event_id, waiting_for=reason)
        return f"waiting: {reason}"
    async with rt.sessions() as s:
        if await operations.paused(s) is not None:
            # Kept queued: the sweeper queues it again after a resume.
            return "paused"
    known = spec(kind)
    if known is None or known.family not in RUNNERS:
        await _fail_unknown(rt, event_id, kind)
        return "unknown-kind"
    family = known.family
    total = 0
    # The job stops draining well before its own timeout (the lease): the rest waits for its own jobs.
    budget = time.monotonic() + rt.settings.jobs.lease_seconds / 2
    for more in range(rounds - 1, -1, -1):
        n = await _round(rt, family, own=event_id, wide=rounds > 1)
        total += n
        if n == 0 or time.monotonic() > budget:
            break
        if more and home is not None and await fairness.give_way(home, rt, kind):
            break  # another tenant's work came in while this one drained: its turn now, this drain queued behind it
    return f"processed {total}"


def _settled_elsewhere(event: Event) -> str | None:
    """Why this event's own job has nothing to do: it was finished, or is running under a live lease (if its
    holder dies, the lease runs out and the sweeper queues it again). None: it may be ready, so claim."""
    if event.status not in OPEN_STATUSES:
        return f"already {event.status}"
    if event.status == EventStatus.running and event.lease_until is not None and event.lease_until > utcnow():
        return "running in another job"
    return None


async def _round(rt: Runtime, family: Family, *, own: int | None = None, wide: bool = False) -> int:
    """Claim a batch, run it, record its outcomes, commit, then enqueue what follows. ``own``: the event of the
    job running this round, whose job arq finishes; the waiting jobs of the rest of the batch are taken out of the
    queue. ``wide``: no other tenant waits for this process (see _claim). The number of events worked (0 when the
    batch was held for an unusable upstream)."""
    async with rt.sessions() as s:
        claimed = await _claim(rt, s, family, wide=wide)
        if not claimed:
            return 0
        if rt.queue is not None:
            await rt.queue.drop_events([(e.id, e.attempts - 1, e.kind) for e in claimed if e.id != own])
        structlog.contextvars.bind_contextvars(event_ids=[e.id for e in claimed])
        try:
            after = await _run_batch(rt, s, family, claimed)
        finally:
            structlog.contextvars.unbind_contextvars("event_ids")
    if after is None:
        return 0
    await after.enqueue(rt)
    return len(claimed)


@dataclass
class AfterCommit:
    """What a round enqueues once its transaction is committed, never before (a job must find its event stored)."""

    retries: list[tuple[int, int, str, datetime | None]] = field(default_factory=list)
    added: list[tuple[int, str]] = field(default_factory=list)  # internal events the batch asked for

    async def enqueue(self, rt: Runtime) -> None:
        if rt.queue is None:
            return
        for event_id, attempts, kind, at in self.retries:
            await rt.queue.enqueue_event(event_id, attempts, kind=kind, defer_until=at)
        # A course to make: its job now, not at the sweeper's next pass.
        queued = await rt.queue.enqueue_events([(event_id, 0, kind) for event_id, kind in self.added])
        if queued:
            async with rt.sessions() as s:
                await inbox.mark_queued(s, queued)
                await s.commit()


async def _run_batch(rt: Runtime, s: AsyncSession, family: Family, claimed: list[Event]) -> AfterCommit | None:
    """Run the family's runner on the batch and record what it decided, in one commit; None: the batch was held."""
    ids = [e.id for e in claimed]
    log.info("jobs.batch.start", event_ids=ids)
    started = time.perf_counter()
    added: list[Event] = []
    try:
        ran = await RUNNERS[family](rt, s, claimed)
        outcomes = ran.outcomes
        added = [e for r in ran.requests if (e := await add_request(s, r)) is not None]
    except (MoodleError, CourseSalesError) as exc:
        await s.rollback()
        fault = upstreams.fault_of(exc)
        if fault is not None:
            # The upstream as a whole cannot be used: one shared state, and the batch waits for it untouched.
            await _hold(rt, s, ids, fault)
            return None
        claimed = await _reload(s, ids)
        outcomes = {e.id: outcome_for_failure(rt, e, exc) for e in claimed}
    except IntegrityError as exc:
        # Another job recorded the same link a moment ago: run the batch again shortly, against the new state.
        await s.rollback()
        claimed = await _reload(s, ids)
        why = f"a concurrent job changed the same records ({type(exc.orig).__name__}); retrying"
        outcomes = {e.id: Outcome(EventStatus.retrying, why, next_attempt_at=utcnow() + COURSE_WAIT) for e in claimed}
    await _record_outcomes(s, claimed, outcomes)
    await s.commit()
    JOB_SECONDS.labels(metric_label(claimed[0].kind)).observe(time.perf_counter() - started)
    for e in claimed:
        EVENTS_FINISHED.labels(metric_label(e.kind), e.status).inc()
        log.info("jobs.event.finished", event_id=e.id, status=e.status, error=e.last_error)
    return AfterCommit(
        retries=[(e.id, e.attempts, e.kind, e.next_attempt_at) for e in claimed if e.status == EventStatus.retrying],
        added=[(e.id, e.kind) for e in added],
    )


async def _hold(rt: Runtime, s: AsyncSession, ids: list[int], fault: upstreams.Fault) -> None:
    news = await upstreams.mark(s, fault)
    await inbox.hold(s, ids, upstreams.waiting_text(fault.upstream, fault.state, fault.reason))
    if news:
        await raise_alert(s, cause=f"upstream.{fault.upstream}", message=fault.reason,
                          fix=upstreams.FIX.get((fault.upstream, fault.state)))  # fmt: skip
    await s.commit()
    rt.upstream_states.forget()
    log.warning("upstream.unusable", upstream=fault.upstream, state=fault.state, reason=fault.reason, held=len(ids))


async def _record_outcomes(s: AsyncSession, claimed: list[Event], outcomes: dict[int, Outcome]) -> None:
    """Finish the events (their attempts read in one query) and alert on what a person must fix; the caller commits."""
    await inbox.finish_all(s, [(e, outcomes[e.id]) for e in claimed])
    for e in claimed:
        outcome = outcomes[e.id]
        if outcome.status in (EventStatus.failed, EventStatus.needs_review):
            await raise_alert(
                s,
                cause=outcome.alert or f"event.{outcome.status}",
                message=f"event {e.id} ({e.kind}): {outcome.error}",
                fix=outcome.fix or f"see GET /api/events/{e.id}; fix the cause, then replay or resolve it",
                event_id=e.id,
            )


async def _claim(rt: Runtime, s: AsyncSession, family: Family, *, wide: bool = False) -> list[Event]:
    """Claim (and commit) a batch. For families whose Moodle calls take arrays, one round per process at a time
    gathers its batch, and waits for a burst still arriving to fill it: concurrent rounds would split it.

    A wide round of such a family (a drain that no other tenant waits for) takes what its calls can carry at once,
    ``max_in_flight`` arrays of ``max_batch``: a round's fixed costs (the claim, the reads of its links, the
    finishing, two commits) are then paid once for them all rather than once a call (BENCHMARKS.md)."""
    batch = rt.settings.moodle.max_batch
    kinds: list[str] = list(kinds_of(family))
    if family not in GATHERED:
        return await _claim_now(rt, s, kinds, batch)
    limit = batch * rt.settings.moodle.max_in_flight if wide else batch
    async with rt.gathering.setdefault(family, asyncio.Lock()):
        await gathering.await_batch(s, kinds, batch)
        return await _claim_now(rt, s, kinds, limit)


async def _claim_now(rt: Runtime, s: AsyncSession, kinds: list[str], limit: int) -> list[Event]:
    claimed = await claim.claim(s, kinds=kinds, limit=limit, lease_seconds=rt.settings.jobs.lease_seconds)
    await s.commit()
    return claimed


async def enqueue_internal(rt: Runtime) -> None:
    """Queue the internal events waiting for their first job (the reconcile's courses to make and completions
    found), now rather than at the sweeper's next pass."""
    if rt.queue is None:
        return
    async with rt.sessions() as s:
        rows = (
            await s.execute(
                select(col(Event.id), col(Event.kind)).where(
                    col(Event.status) == EventStatus.accepted, col(Event.source) == Source.internal
                )
            )
        ).all()
    queued = await rt.queue.enqueue_events([(r.id, 0, r.kind) for r in rows])
    if queued:
        async with rt.sessions() as s:
            await inbox.mark_queued(s, queued)
            await s.commit()


async def _reload(s: AsyncSession, ids: list[int]) -> list[Event]:
    rows = await s.execute(select(Event).where(col(Event.id).in_(ids)).execution_options(populate_existing=True))
    return list(rows.scalars())


async def _fail_unknown(rt: Runtime, event_id: int, kind: str) -> None:
    async with rt.sessions() as s:
        claimed = await claim.claim(s, kinds=[kind], limit=1, lease_seconds=60, ids=[event_id])
        for e in claimed:
            await inbox.finish(s, e, Outcome(EventStatus.failed, f"no handler for event kind {kind!r}"))
        await s.commit()
