"""Group commit: concurrent webhook deliveries share transactions, and each still gets its own, exact answer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.db.group_commit import GroupCommit
from app.db.inbox import BodyMismatch, Delivery, Stored
from app.db.models import EventStatus
from app.jobs.queue import DEFAULT_QUEUE, loads
from app.metrics import INTAKE_BATCH
from app.runtime import Runtime
from tests.conftest import postgres_only
from tests.helpers import events, post_contact


def _batches() -> tuple[float, float]:
    """(batches committed, deliveries in them) so far, from the histogram."""
    samples = {s.name: s.value for s in INTAKE_BATCH.collect()[0].samples}
    return samples["sync_intake_batch_size_count"], samples["sync_intake_batch_size_sum"]


def _delivery(key: str, payload: dict[str, Any] | None = None, *, status: EventStatus = EventStatus.queued) -> Delivery:
    return Delivery(
        source="coursesales",
        kind="contact.upserted",
        dedupe_key=key,
        body_hash=f"hash-{key}",
        payload=payload if payload is not None else {"n": key},
        subject=f"contact:{key}",
        status=status,
    )


async def test_concurrent_deliveries_share_commits_and_each_is_answered(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    before = _batches()
    answers = await asyncio.gather(*(post_contact(client, f"gc-{i}", contact_id=100 + i) for i in range(40)))
    after = _batches()
    assert [a.status_code for a in answers] == [202] * 40
    ids = [a.json()["event_id"] for a in answers]
    assert len(set(ids)) == 40 and not any(a.json()["duplicate"] for a in answers)
    assert all(a.json()["status"] == "queued" for a in answers)
    assert len(await events(runtime)) == 40
    assert await runtime.queue.redis.zcard(DEFAULT_QUEUE) == 40  # every job queued, in pipelined round trips
    assert after[1] - before[1] == 40
    assert after[0] - before[0] < 40, "concurrent deliveries were committed one by one"


async def test_repeats_and_clashes_inside_one_batch(client: httpx.AsyncClient, runtime: Runtime) -> None:
    same_a, same_b, clash = await asyncio.gather(
        post_contact(client, "gc-same"),
        post_contact(client, "gc-same"),
        post_contact(client, "gc-same", firstname="Janet"),
    )
    assert same_a.status_code == same_b.status_code == 202
    assert same_a.json()["event_id"] == same_b.json()["event_id"]
    assert sorted([same_a.json()["duplicate"], same_b.json()["duplicate"]]) == [False, True]
    assert clash.status_code == 422 and "different body" in clash.text
    assert len(await events(runtime)) == 1
    assert await runtime.queue.redis.zcard(DEFAULT_QUEUE) == 1


async def test_a_bad_row_does_not_fail_the_rest_of_its_batch(runtime: Runtime) -> None:
    queued: list[tuple[int, str]] = []

    async def enqueue(items: list[tuple[int, str]]) -> bool:
        queued.extend(items)
        return True

    intake = GroupCommit(runtime.sessions, enqueue)
    unstorable = _delivery("gc-bad", {"not json": {1, 2}})  # a set cannot be stored as JSON
    results = await asyncio.gather(
        intake.accept(_delivery("gc-ok-1")),
        intake.accept(unstorable),
        intake.accept(_delivery("gc-ok-2")),
        return_exceptions=True,
    )
    ok1, bad, ok2 = results
    assert isinstance(ok1, Stored) and isinstance(ok2, Stored) and ok1.created and ok2.created
    assert isinstance(bad, Exception) and not isinstance(bad, Stored)
    assert sorted(e.dedupe_key for e in await events(runtime)) == ["gc-ok-1", "gc-ok-2"]
    assert sorted(event_id for event_id, _ in queued) == sorted([ok1.event_id, ok2.event_id])


async def test_a_failed_enqueue_leaves_the_events_accepted_for_the_sweeper(runtime: Runtime) -> None:
    async def redis_down(items: list[tuple[int, str]]) -> bool:
        return False

    intake = GroupCommit(runtime.sessions, redis_down)
    first, second = await asyncio.gather(intake.accept(_delivery("gc-r1")), intake.accept(_delivery("gc-r2")))
    assert first.status == second.status == EventStatus.accepted
    assert {e.status for e in await events(runtime)} == {EventStatus.accepted}


async def test_a_known_id_with_another_body_raises(runtime: Runtime) -> None:
    async def enqueue(items: list[tuple[int, str]]) -> bool:
        return True

    intake = GroupCommit(runtime.sessions, enqueue)
    made = await intake.accept(_delivery("gc-x"))
    again = await intake.accept(_delivery("gc-x"))
    assert made.created and not again.created and again.event_id == made.event_id
    other = _delivery("gc-x")
    other.body_hash = "another"
    with pytest.raises(BodyMismatch):
        await intake.accept(other)


async def test_enqueue_events_is_one_idempotent_round_trip(runtime: Runtime) -> None:
    items = [(9001, 0, "contact.upserted"), (9002, 0, "course_date.changed")]
    assert await runtime.queue.enqueue_events(items) == [9001, 9002]
    assert await runtime.queue.enqueue_events(items) == [9001, 9002]  # the sweeper's repeat changes nothing
    assert await runtime.queue.redis.zcard(DEFAULT_QUEUE) == 1
    assert await runtime.queue.redis.zcard("sync:slow") == 1
    later = datetime.now(UTC) + timedelta(minutes=5)
    assert await runtime.queue.enqueue_event(9001, 1, kind="contact.upserted", defer_until=later)
    score = await runtime.queue.redis.zscore(DEFAULT_QUEUE, "event:9001:1")
    assert score == pytest.approx(later.timestamp() * 1000, abs=1000), "a retry waits until its time"
    job = await runtime.queue.redis.get("arq:job:event:9001:1")
    assert job is not None and loads(job)["a"] == [9001]  # what arq's worker reads: process_event(9001)


async def test_a_connection_the_database_closed_is_replaced_not_answered_with_an_error(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """The intake's pool skips the ping before each use; a restarted database costs one retry, not a 500."""
    postgres_only("terminating a server connection needs PostgreSQL")
    assert (await post_contact(client, "gc-before", contact_id=1)).status_code == 202  # the pool holds a connection
    async with runtime.engine.connect() as conn:
        await conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle'"
            )
        )
    after = await post_contact(client, "gc-after", contact_id=2)
    assert after.status_code == 202 and after.json()["duplicate"] is False
    assert [e.dedupe_key for e in await events(runtime)] == ["gc-before", "gc-after"]
