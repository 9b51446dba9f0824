"""The real arq worker on a real Redis: a delivery becomes a Moodle user without anyone calling the task."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from app.db import claim
from app.jobs.queue import DEFAULT_QUEUE, event_job_id
from app.jobs.tasks import run_event
from app.jobs.worker import make_worker
from app.runtime import Runtime
from app.settings import Settings
from tests.helpers import events, moodle_user, post_contact, stop_worker, wait_for


async def test_worker_processes_queued_event(client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any) -> None:
    worker = make_worker(runtime.settings, runtime=runtime, handle_signals=False, poll_delay=0.05)
    task = asyncio.create_task(worker.async_run())
    try:
        r = await post_contact(client, "d-worker")
        assert r.json()["status"] == "queued"

        async def done() -> bool:
            return [e.status for e in await events(runtime)] == ["done"]

        await wait_for(done)
        assert moodle_user(moodle_fake, "jane.doe@example.com") is not None
        assert await runtime.queue.redis.keys("arq:result:*") == [], "results are not kept (they would block replays)"
    finally:
        await stop_worker(worker, task)


async def test_idle_workers_poll_as_often_as_configured(settings: Settings) -> None:
    """jobs.poll_delay_seconds is the floor of the latency from an event to its work (50 ms by default)."""
    assert make_worker(settings, handle_signals=False).poll_delay_s == 0.05
    settings.jobs.poll_delay_seconds = 0.2
    assert make_worker(settings, handle_signals=False).poll_delay_s == 0.2
    assert make_worker(settings, handle_signals=False, poll_delay=0.01).poll_delay_s == 0.01  # a test's own wins


async def test_a_job_whose_event_another_round_took_makes_no_claim(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    """Each event has its own job, but one round drains a batch: the other jobs of that batch find their events
    finished (or running under a live lease) and stop after one read, without claiming anything."""
    for i in range(3):
        await post_contact(
            client, f"d-batch-{i}", contact_id=100 + i, username=f"b{i}@example.com", email=f"b{i}@x.org"
        )
    first, second, third = [e.id for e in await events(runtime)]
    assert await run_event(runtime, first) == "processed 3"
    assert [await run_event(runtime, i) for i in (second, third)] == ["already done", "already done"]

    await post_contact(client, "d-batch-held", contact_id=200, username="held@example.com", email="held@x.org")
    await post_contact(client, "d-batch-next", contact_id=201, username="next@example.com", email="next@x.org")
    held, waiting = [e.id for e in await events(runtime)][3:]
    async with runtime.sessions() as s:
        await claim.claim(s, kinds=["contact.upserted"], limit=1, lease_seconds=60, ids=[held])
        await s.commit()
    assert await run_event(runtime, held) == "running in another job"
    statuses = {e.id: (e.status, e.attempts) for e in await events(runtime)}
    assert statuses[held] == ("running", 1), "not claimed a second time while its lease lives"
    assert statuses[waiting] == ("queued", 0), "the job of a running event does not drain the others"
    assert await run_event(runtime, waiting) == "processed 1"


async def test_a_round_takes_its_batchs_waiting_jobs_out_of_the_queue(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    """The jobs of the events a round claimed are dropped from Redis in one round trip (the running job's own is
    arq's to finish), so a burst of N events costs about N / batch jobs, not N."""
    for i in range(4):
        await post_contact(client, f"d-drop-{i}", contact_id=300 + i, username=f"d{i}@example.com", email=f"d{i}@x.org")
    ids = [e.id for e in await events(runtime)]
    redis = runtime.queue.redis
    assert len(await redis.zrange(DEFAULT_QUEUE, 0, -1)) == 4
    assert await run_event(runtime, ids[0]) == "processed 4"
    assert [j.decode() for j in await redis.zrange(DEFAULT_QUEUE, 0, -1)] == [event_job_id(ids[0], 0)]
    assert await redis.keys(f"arq:job:event:{ids[1]}:*") == []
    assert [e.status for e in await events(runtime)] == ["done"] * 4


async def test_finishing_a_batch_keeps_a_result_unless_replaced_and_drops_the_password_only_when_done(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """finish_all writes a batch in set-wise statements: an outcome without a result keeps the event's, a retry keeps
    the password (the next attempt needs it), done drops it, and each event's open attempt is closed."""
    from sqlalchemy import select

    from app.db import inbox
    from app.db.inbox import Outcome
    from app.db.models import Attempt, EventStatus
    from app.db.types import utcnow

    for i in range(2):
        await post_contact(client, f"d-fin-{i}", contact_id=400 + i, username=f"f{i}@example.com", email=f"f{i}@x.org")
    async with runtime.sessions() as s:
        first, second = await claim.claim(s, kinds=["contact.upserted"], limit=2, lease_seconds=60)
        await inbox.finish_all(
            s,
            [
                (first, Outcome(EventStatus.retrying, "later", result={"verify_user": True}, next_attempt_at=utcnow())),
                (second, Outcome(EventStatus.done, result={"moodle_user_id": 7})),
            ],
        )
        await s.commit()
    async with runtime.sessions() as s:
        (first,) = await claim.claim(s, kinds=["contact.upserted"], limit=1, lease_seconds=60, ids=[first.id])
        await inbox.finish_all(s, [(first, Outcome(EventStatus.retrying, "again"))])
        await s.commit()
    one, two = await events(runtime)
    assert (one.status, one.last_error, one.result, one.lease_until) == (
        "retrying",
        "again",
        {"verify_user": True},
        None,
    )
    assert one.secret is not None, "a retry keeps the password for its next attempt"
    assert (two.status, two.result, two.secret) == ("done", {"moodle_user_id": 7}, None)
    async with runtime.sessions() as s:
        tries = (await s.execute(select(Attempt).order_by(Attempt.id))).scalars().all()
    assert [(a.event_id, a.number, a.outcome, a.error, a.finished_at is not None) for a in tries] == [
        (one.id, 1, "retrying", "later", True),
        (two.id, 1, "done", None, True),
        (one.id, 2, "retrying", "again", True),
    ]


async def test_a_rounds_claim_and_finish_are_one_statement_each_on_postgresql(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """The claim's update and the finishing update and attempts go as one statement over arrays, not as an
    executemany, which PostgreSQL plans and runs once a row (10 s of the database's time in a 30,200-event drain,
    BENCHMARKS.md). An attempt's row is written once, finished: the claim writes none."""
    import sqlalchemy as sa

    from app.db import inbox
    from app.db.inbox import Outcome
    from app.db.models import EventStatus
    from tests.conftest import postgres_only

    postgres_only("SQLite takes the executemany")
    for i in range(30):
        await post_contact(client, f"d-one-{i}", contact_id=500 + i, username=f"o{i}@example.com", email=f"o{i}@x.org")
    seen: list[tuple[str, bool]] = []

    def record(conn: object, cursor: object, statement: str, parameters: object, context: object, many: bool) -> None:
        words = statement.split()
        seen.append((f"{words[0]} {words[2 if words[0] == 'INSERT' else 1]}", many))

    sa.event.listen(runtime.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with runtime.sessions() as s:
            claimed = await claim.claim(s, kinds=["contact.upserted"], limit=30, lease_seconds=60)
            writes_of_the_claim = [w for w in seen if not w[0].startswith("SELECT")]
            seen.clear()
            await inbox.finish_all(s, [(e, Outcome(EventStatus.done, result={"n": e.id})) for e in claimed])
            await s.commit()
    finally:
        sa.event.remove(runtime.engine.sync_engine, "before_cursor_execute", record)
    assert len(claimed) == 30
    assert writes_of_the_claim == [("UPDATE events", False)], writes_of_the_claim
    assert [w for w in seen if w[0] != "COMMIT"] == [("UPDATE events", False), ("INSERT attempts", False)], seen
    done = await events(runtime)
    assert {e.status for e in done} == {"done"} and all(e.result == {"n": e.id} for e in done)


async def test_a_lapsed_lease_is_claimed_again_and_only_its_new_attempt_is_finished(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """A worker died holding an event: once its lease runs out the event is claimed again (its own statement, on
    ix_events_lease), with a second attempt; the dead one's is recorded as lost when it is taken up again, started
    when it was claimed, and finishing writes the second."""
    from datetime import timedelta

    from sqlalchemy import select, update

    from app.db import inbox
    from app.db.inbox import Outcome
    from app.db.models import Attempt, Event, EventStatus
    from app.db.types import utcnow

    await post_contact(client, "d-lapsed", contact_id=600, username="lapsed@example.com", email="lapsed@x.org")
    async with runtime.sessions() as s:
        (dead,) = await claim.claim(s, kinds=["contact.upserted"], limit=5, lease_seconds=60)
        await s.commit()
    async with runtime.sessions() as s:
        assert await claim.claim(s, kinds=["contact.upserted"], limit=5, lease_seconds=60) == []  # still held
        await s.execute(update(Event).values(lease_until=utcnow() - timedelta(seconds=1)))
        await s.commit()
    claimed_at = dead.updated_at
    async with runtime.sessions() as s:
        (again,) = await claim.claim(s, kinds=["contact.upserted"], limit=5, lease_seconds=60)
        assert (again.id, again.attempts) == (dead.id, 2)
        lost = (await s.execute(select(Attempt))).scalars().all()
        assert [(a.number, a.outcome, a.started_at, a.error) for a in lost] == [(1, "lost", claimed_at, claim.LOST_WHY)]
        await inbox.finish_all(s, [(again, Outcome(EventStatus.done, result={"moodle_user_id": 9}))])
        await s.commit()
    async with runtime.sessions() as s:
        tries = (await s.execute(select(Attempt).order_by(Attempt.id))).scalars().all()
    assert [(a.number, a.outcome, a.finished_at is not None) for a in tries] == [
        (1, "lost", True),
        (2, "done", True),
    ]
    (event,) = await events(runtime)
    assert (event.status, event.result, event.lease_until) == ("done", {"moodle_user_id": 9}, None)


async def test_a_worker_process_settles_its_heap_once_started_and_one_beside_the_api_leaves_it(
    settings: Settings, runtime: Runtime
) -> None:
    """`moodle-sync worker` (no runtime given) freezes start-up's objects and raises the collector's thresholds
    (app.heap: 1.6 s of a drain's 6.5 s of worker CPU went to the collector); a worker sharing a runtime (`serve`,
    whose start settles the heap itself) leaves the process's collector as it is."""
    import gc

    from app import heap

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        gc.unfreeze()
        beside = make_worker(runtime.settings, runtime=runtime, handle_signals=False)
        ctx: dict[str, Any] = {}
        await beside.on_startup(ctx)  # type: ignore[misc]  # arq types its hooks as optional
        await beside.on_shutdown(ctx)  # type: ignore[misc]  # as above
        assert (gc.get_threshold(), gc.get_freeze_count()) == ((700, 10, 10), 0)
        own = make_worker(settings, handle_signals=False)
        ctx = {}
        await own.on_startup(ctx)  # type: ignore[misc]  # as above
        try:
            assert gc.get_threshold() == heap.THRESHOLDS
            assert gc.get_freeze_count() > 10_000, "start-up's objects are out of the collector's view"
        finally:
            await own.on_shutdown(ctx)  # type: ignore[misc]  # as above
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
