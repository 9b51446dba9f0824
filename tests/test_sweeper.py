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
    runtime.settings.moodle.url = ""
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "queued" and event.attempts == 0
