"""Passwords and tokens never reach the database in clear, Redis, the logs or the API's answers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.jobs.worker import make_worker
from app.runtime import Runtime
from tests.conftest import TEST_TOKENS, bearer
from tests.helpers import events, post_contact, stop_worker, wait_for

PASSWORD = "Unm1stakable!Secret"


async def _dump_database(rt: Runtime) -> str:
    out = []
    async with rt.engine.connect() as conn:
        for table in ("events", "attempts", "user_links", "leases", "registrations", "enrolment_links"):
            rows = (await conn.execute(text(f"SELECT * FROM {table}"))).all()  # noqa: S608 (fixed names)
            out.append(repr(rows))
    return "\n".join(out)


async def _dump_redis(rt: Runtime) -> str:
    redis = rt.queue.redis
    out = []
    for key in await redis.keys("*"):
        kind = (await redis.type(key)).decode()
        if kind == "string":
            out.append(repr(await redis.get(key)))
        elif kind == "zset":
            out.append(repr(await redis.zrange(key, 0, -1)))
        elif kind == "hash":
            out.append(repr(await redis.hgetall(key)))
        out.append(repr(key))
    return "\n".join(out)


async def test_no_secret_anywhere(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    r = await post_contact(client, "d-secret", password=PASSWORD)
    assert r.status_code == 202
    waiting = await _dump_redis(runtime) + await _dump_database(runtime)
    assert PASSWORD not in waiting
    worker = make_worker(runtime.settings, runtime=runtime, handle_signals=False, poll_delay=0.05)
    task = asyncio.create_task(worker.async_run())
    try:

        async def settled() -> bool:
            return [e.status for e in await events(runtime)] == ["done"]

        await wait_for(settled)
    finally:
        await stop_worker(worker, task)
    answers = [
        (await client.get("/api/events", headers=bearer("api"))).text,
        (await client.get(f"/api/events/{r.json()['event_id']}", headers=bearer("api"))).text,
        r.text,
    ]
    logs = capsys.readouterr()
    haystack = "\n".join([*answers, await _dump_redis(runtime), await _dump_database(runtime), logs.out, logs.err])
    for needle in (PASSWORD, TEST_TOKENS["coursesales"], TEST_TOKENS["api"], "test-token"):
        assert needle not in haystack, f"{needle!r} leaked"
    assert any(u["password"] == PASSWORD for u in moodle_fake.users.values()), "the password did reach Moodle"
    assert (await events(runtime))[0].secret is None
