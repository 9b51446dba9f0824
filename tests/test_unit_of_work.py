"""The operator endpoints' one transaction owner: a job is enqueued only after the change it runs is committed,
and an endpoint that fails leaves nothing written and nothing queued."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.api.unit_of_work import UnitOfWork, unit_of_work
from app.db.models import Event, EventStatus
from app.jobs.queue import Queue
from app.runtime import Runtime
from tests.conftest import bearer


class SpyQueue(Queue):
    """The real queue, reading at each enqueue what another connection sees of the events: the committed state."""

    def __init__(self, rt: Runtime, real: Queue) -> None:
        super().__init__(real.redis)
        self.rt = rt
        self.seen: list[tuple[int, str]] = []

    async def enqueue_events(
        self, items: Sequence[tuple[int, int, str | None]], *, defer_until: datetime | None = None
    ) -> list[int]:
        async with self.rt.sessions() as s:
            for event_id, _, _ in items:
                row = await s.get(Event, event_id)
                assert row is not None, "a job was enqueued for an event not committed yet"
                self.seen.append((event_id, row.status))
        return await super().enqueue_events(items, defer_until=defer_until)


async def _failed_events(rt: Runtime, n: int) -> list[int]:
    async with rt.sessions() as s:
        rows = [
            Event(source="coursesales", kind="contact.upserted", dedupe_key=f"uow-{i}", body_hash="-",
                  payload={}, status=EventStatus.failed, last_error="Moodle refused")
            for i in range(n)
        ]  # fmt: skip
        s.add_all(rows)
        await s.commit()
        return [r.id for r in rows]


@pytest.fixture
def spy(runtime: Runtime) -> SpyQueue:
    assert runtime.queue is not None
    runtime.queue = SpyQueue(runtime, runtime.queue)
    return runtime.queue


async def test_a_replay_is_enqueued_after_its_commit_and_answers_queued(
    runtime: Runtime, client: httpx.AsyncClient, spy: SpyQueue
) -> None:
    [event_id] = await _failed_events(runtime, 1)
    r = await client.post(f"/api/events/{event_id}/replay", headers=bearer("api"))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "queued"
    assert spy.seen == [(event_id, EventStatus.accepted)], "the job saw the replay committed, not the failed event"


async def test_a_bulk_replay_enqueues_every_event_after_one_commit(
    runtime: Runtime, client: httpx.AsyncClient, spy: SpyQueue
) -> None:
    ids = await _failed_events(runtime, 3)
    r = await client.post("/api/events/replay", json={"status": "failed"}, headers=bearer("api"))
    assert r.status_code == 200, r.text
    assert r.json()["replayed"] == ids
    assert spy.seen == [(i, EventStatus.accepted) for i in ids]
    async with runtime.sessions() as s:
        statuses = (await s.execute(select(Event.status).where(Event.id.in_(ids)))).scalars().all()
    assert set(statuses) == {EventStatus.queued}


async def test_an_endpoint_that_fails_writes_nothing_and_queues_nothing(runtime: Runtime, spy: SpyQueue) -> None:
    [event_id] = await _failed_events(runtime, 1)
    unit = unit_of_work(runtime)
    uow: UnitOfWork = await anext(unit)
    event = await uow.session.get(Event, event_id)
    assert event is not None
    event.status = EventStatus.accepted
    uow.queue([event])
    ran: list[Any] = []

    async def after() -> None:
        ran.append(True)

    uow.after_commit(after)
    with pytest.raises(RuntimeError):
        await unit.athrow(RuntimeError("the endpoint failed"))
    assert spy.seen == [] and ran == []
    async with runtime.sessions() as s:
        row = await s.get(Event, event_id)
        assert row is not None and row.status == EventStatus.failed


async def test_after_commit_actions_run_once_the_change_is_stored(runtime: Runtime, spy: SpyQueue) -> None:
    [event_id] = await _failed_events(runtime, 1)
    unit = unit_of_work(runtime)
    uow: UnitOfWork = await anext(unit)
    event = await uow.session.get(Event, event_id)
    assert event is not None
    event.status = EventStatus.done
    seen: list[str] = []

    async def after() -> None:
        async with runtime.sessions() as s:
            row = await s.get(Event, event_id)
            assert row is not None
            seen.append(row.status)

    uow.after_commit(after)
    with pytest.raises(StopAsyncIteration):
        await anext(unit)
    assert seen == [EventStatus.done]
