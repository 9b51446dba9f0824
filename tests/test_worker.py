"""The real arq worker on a real Redis: a delivery becomes a Moodle user without anyone calling the task."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

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
