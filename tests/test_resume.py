"""Resume means now: the work a pause held starts the moment it is lifted, not at the sweeper's next round."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from app.jobs.sweeper import sweep
from app.jobs.worker import make_worker
from app.runtime import Runtime
from tests.conftest import bearer
from tests.helpers import events, post_contact, stop_worker, wait_for

OPS = bearer("api")


async def post_many(client: httpx.AsyncClient, n: int) -> None:
    for i in range(n):
        r = await post_contact(client, f"r-{i}", contact_id=i + 1, username=f"held{i}", email=f"held{i}@example.com")
        assert r.status_code == 202


async def test_a_resume_starts_the_held_work_at_once(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    runtime.settings.jobs.sweep_interval_seconds = 3600  # the sweeper would take an hour
    assert (await client.post("/api/pause", headers=OPS)).status_code == 200
    worker = make_worker(runtime.settings, runtime=runtime, handle_signals=False, poll_delay=0.05)
    task = asyncio.create_task(worker.async_run())
    try:
        await post_many(client, 50)
        await asyncio.sleep(1.0)  # their jobs ran and found the pause
        assert {e.status for e in await events(runtime)} == {"queued"}
        resumed = time.monotonic()
        assert (await client.post("/api/resume", headers=OPS)).json()["paused"] is False

        async def done() -> bool:
            return all(e.status == "done" for e in await events(runtime))

        await wait_for(done, timeout=20)
        assert time.monotonic() - resumed < 10, "within a few seconds of the resume"
    finally:
        await stop_worker(worker, task)
    creates = sum(len(p["users"]) for f, p in moodle_fake.calls if f == "core_user_create_users")
    assert creates == 50, "each held event once"


async def test_a_resume_racing_a_sweep_queues_each_event_once(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    from datetime import timedelta

    assert (await client.post("/api/pause", headers=OPS)).status_code == 200
    await post_many(client, 20)
    await runtime.queue.redis.flushdb()  # their jobs are gone (they ran and found the pause)
    resume = client.post("/api/resume", headers=OPS)
    await asyncio.gather(resume, sweep(runtime, "racer", grace=timedelta(0)))
    assert await runtime.queue.redis.zcard("sync:default") == 20, "one job per event, whoever queued it"
    again = await client.post("/api/resume", headers=OPS)
    assert again.status_code == 200 and await runtime.queue.redis.zcard("sync:default") == 20
    worker = make_worker(runtime.settings, runtime=runtime, handle_signals=False, poll_delay=0.05)
    task = asyncio.create_task(worker.async_run())
    try:

        async def done() -> bool:
            return all(e.status == "done" for e in await events(runtime))

        await wait_for(done, timeout=20)
    finally:
        await stop_worker(worker, task)
    assert sum(len(p["users"]) for f, p in moodle_fake.calls if f == "core_user_create_users") == 20


async def test_the_cli_resume_queues_the_held_work(client: httpx.AsyncClient, runtime: Runtime) -> None:
    if not runtime.settings.redis_url:
        pytest.skip("needs a Redis both processes reach (SYNC_TEST_REDIS_URL; CI sets it)")
    assert (await client.post("/api/pause", headers=OPS)).status_code == 200
    await post_many(client, 5)
    await runtime.queue.redis.flushdb()  # their jobs ran and found the pause
    env = {**os.environ, "SYNC_MODE": "test", "SYNC_DATABASE_URL": runtime.settings.effective_database_url,
           "SYNC_REDIS_URL": runtime.settings.redis_url, "SYNC_CONFIG": "/nonexistent/sync.toml"}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "app.cli", "resume"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "5 held event(s) queued" in done.stderr
    assert await runtime.queue.redis.zcard("sync:default") == 5
    again = subprocess.run([sys.executable, "-m", "app.cli", "resume"], env=env, capture_output=True, text=True,
                           timeout=60, check=False)  # fmt: skip
    assert again.returncode == 0 and "held event" not in again.stderr, "nothing paused: nothing queued twice"
