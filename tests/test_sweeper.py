"""The sweeper: events whose job was lost (Redis down or emptied) are queued again, once, by one worker."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from arq.connections import RedisSettings

from app.db import leases
from app.jobs.queue import DEFAULT_QUEUE, Queue, connect
from app.jobs.sweeper import sweep
from app.runtime import Runtime
from tests.helpers import events, moodle_user, post_contact, process_all


async def test_event_accepted_while_redis_down_is_swept_and_done(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    real = runtime.queue
    runtime.queue = Queue(connect(RedisSettings(host="127.0.0.1", port=1)))
    try:
        assert (await post_contact(client, "d-1")).json()["status"] == "accepted"
        assert await sweep(runtime, "w1", grace=timedelta(0)) == 0, "Redis still down: nothing queued, nothing lost"
    finally:
        await runtime.queue.close()
        runtime.queue = real
    assert await sweep(runtime, "w1", grace=timedelta(0)) == 1
    assert [e.status for e in await events(runtime)] == ["queued"]
    assert await runtime.queue.redis.zcard(DEFAULT_QUEUE) == 1
    assert await sweep(runtime, "w1", grace=timedelta(0)) == 1, "sweeping again is harmless"
    assert await runtime.queue.redis.zcard(DEFAULT_QUEUE) == 1, "the job id dedupes the second enqueue"
    await process_all(runtime)
    assert moodle_user(moodle_fake, "jane.doe@example.com") is not None


async def test_redis_emptied_job_requeued(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await post_contact(client, "d-1")
    await runtime.queue.redis.flushdb()
    assert await sweep(runtime, "w1", grace=timedelta(0)) == 1
    assert await runtime.queue.redis.zcard(DEFAULT_QUEUE) == 1


async def test_one_sweeper_at_a_time(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await post_contact(client, "d-1")
    async with runtime.sessions() as s:
        assert await leases.acquire(s, "sweeper", "other-worker", 60)
        await s.commit()
    assert await sweep(runtime, "w1", grace=timedelta(0)) == 0
    async with runtime.sessions() as s:
        await leases.release(s, "sweeper", "other-worker")
        await s.commit()
    assert await sweep(runtime, "w1", grace=timedelta(0)) == 1


async def test_unconfigured_moodle_keeps_events_waiting(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await post_contact(client, "d-1")
    url = runtime.settings.moodle.url
    runtime.settings.moodle.url = ""
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "queued" and event.attempts == 0 and "SYNC_MOODLE__URL" in event.waiting_for
    runtime.settings.moodle.url = url  # configured (and restarted): the sweeper's next round takes it
    await runtime.queue.redis.flushdb()
    assert await sweep(runtime, "w1", grace=timedelta(0)) == 1
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "done" and event.attempts == 1 and event.waiting_for is None


async def test_a_round_that_died_after_dropping_its_batchs_jobs_is_finished_by_the_sweeper(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    """A round takes its batch's waiting jobs out of the queue. If its worker dies mid-round, nothing in Redis is
    left to run those events: their leases run out and the sweeper queues them again, under new job ids."""
    from app.db import claim
    from app.jobs.tasks import run_event

    for i in range(3):
        await post_contact(
            client, f"d-crash-{i}", contact_id=600 + i, username=f"c{i}@example.com", email=f"c{i}@x.org"
        )
    async with runtime.sessions() as s:  # the dead round: claimed with a lease that has already run out
        taken = await claim.claim(s, kinds=["contact.upserted"], limit=3, lease_seconds=-1)
        await s.commit()
    await runtime.queue.drop_events([(e.id, e.attempts - 1, e.kind) for e in taken])  # type: ignore[misc]
    assert await runtime.queue.redis.zcard(DEFAULT_QUEUE) == 0
    assert await sweep(runtime, "w1", grace=timedelta(0)) == 3
    queued = sorted(j.decode() for j in await runtime.queue.redis.zrange(DEFAULT_QUEUE, 0, -1))
    assert queued == sorted(f"event:{e.id}:1" for e in taken)
    assert await run_event(runtime, taken[0].id) == "processed 3"  # type: ignore[arg-type]
    assert [(e.status, e.attempts) for e in await events(runtime)] == [("done", 2)] * 3
    assert all(moodle_user(moodle_fake, f"c{i}@example.com") for i in range(3))


async def test_dropping_jobs_while_redis_is_down_is_harmless(runtime: Runtime) -> None:
    """Dropping is best effort: with Redis down it logs and returns; the jobs left behind stop after one read."""
    from structlog.testing import capture_logs

    queue = Queue(connect(RedisSettings(host="127.0.0.1", port=1)))
    try:
        with capture_logs() as logged:
            assert await queue.drop_events([(1, 0, "contact.upserted"), (2, 0, "course.sync")]) is None
    finally:
        await queue.close()
    assert [(e["event"], e["events"], e["log_level"]) for e in logged] == [("queue.drop.failed", 2, "warning")]


def test_a_job_failure_arq_records_is_serialised_not_a_traceback() -> None:
    """A round takes its batch's jobs out of the queue; a worker that picked one a moment before finds it gone and
    arq records the failure (JobExecutionFailed('job expired')) with our serializer, which must take it."""
    from arq.jobs import serialize_result
    from arq.worker import JobExecutionFailed

    from app.jobs.queue import dumps, loads

    data = serialize_result(
        "process_event",
        (7,),
        {},
        1,
        0,
        False,
        JobExecutionFailed("job expired"),
        0,
        0,
        "event:7:0",
        "sync:default",
        "event:7:0",
        serializer=dumps,
    )
    assert data is not None and "job expired" in loads(data)["r"]


async def test_each_lane_gets_its_own_oldest_events_queued(client: httpx.AsyncClient, runtime: Runtime) -> None:
    """A backlog's course dates (the slow lane) come after thousands of contacts: queued by lane, they start beside
    the first contacts instead of waiting for every contact before them to be taken."""
    from app.jobs.queue import SLOW_QUEUE
    from tests.helpers import post_event

    for n in range(4):
        await post_contact(client, f"d-{n}", contact_id=100 + n, username=f"u{n}@example.com", email=f"u{n}@x.org")
    for n in range(2):
        await post_event(client, {"type": "course_date.changed", "id": f"c-{n}", "course_date_id": 7000 + n})
    await runtime.queue.redis.flushdb()
    assert await sweep(runtime, "w1", grace=timedelta(0), limit=3) == 5
    assert await runtime.queue.redis.zcard(DEFAULT_QUEUE) == 3  # the 3 oldest contacts
    assert await runtime.queue.redis.zcard(SLOW_QUEUE) == 2  # and the course dates, though newer than the 4th
