"""Small helpers shared by the API and worker tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from app.db.models import Event, UserLink
from app.db.types import utcnow
from app.events.examples import coursesales_example
from app.jobs.tasks import run_event
from app.runtime import Runtime
from tests.conftest import TEST_TOKENS


def contact(**kw: Any) -> dict[str, Any]:
    """The example contact (1234, Jane Doe) with ``kw`` over it."""
    return coursesales_example("contact.upserted")["contact"] | kw


def contact_delivery(delivery_id: str, **kw: Any) -> dict[str, Any]:
    """The contact.upserted example as delivery ``delivery_id``, its contact with ``kw`` over it."""
    return coursesales_example("contact.upserted") | {"id": delivery_id, "contact": contact(**kw)}


async def post_contact(client: httpx.AsyncClient, delivery_id: str, **kw: Any) -> httpx.Response:
    return await post_event(client, contact_delivery(delivery_id, **kw))


async def events(rt: Runtime) -> list[Event]:
    async with rt.sessions() as s:
        return list((await s.execute(select(Event).order_by(Event.id))).scalars())


async def links(rt: Runtime) -> list[UserLink]:
    async with rt.sessions() as s:
        return list((await s.execute(select(UserLink).order_by(UserLink.id))).scalars())


async def process_all(rt: Runtime) -> None:
    """Run the jobs of every open event in this process (what a worker would do)."""
    for event in await events(rt):
        if event.status in ("accepted", "queued", "retrying", "running"):
            await run_event(rt, event.id)  # type: ignore[arg-type]


async def make_due(rt: Runtime) -> None:
    """Bring every scheduled retry to now (instead of sleeping until it is due)."""
    async with rt.sessions() as s:
        await s.execute(
            update(Event).where(Event.status == "retrying").values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )
        await s.commit()


async def settle(rt: Runtime, rounds: int = 6) -> None:
    """Process until nothing is open or due: follow-up events (course.sync) and their waiting registrations."""
    for _ in range(rounds):
        await process_all(rt)
        await make_due(rt)
        if all(e.status not in ("accepted", "queued", "retrying", "running") for e in await events(rt)):
            return


async def post_event(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post(
        "/webhooks/coursesales", json=body, headers={"Authorization": f"Bearer {TEST_TOKENS['coursesales']}"}
    )


async def register(
    client: httpx.AsyncClient, delivery_id: str, document: str, course_date_id: int, **contact_kw: Any
) -> httpx.Response:
    body = coursesales_example("registration.registered") | {"id": delivery_id}
    body["registration"].update(
        document_external_id=document, course_date_id=course_date_id, contact=contact(**contact_kw)
    )
    return await post_event(client, body)


async def cancel(
    client: httpx.AsyncClient, delivery_id: str, document: str, course_date_id: int, contact_id: int = 1234
) -> httpx.Response:
    body = coursesales_example("registration.cancelled") | {"id": delivery_id}
    body["registration"].update(document_external_id=document, course_date_id=course_date_id, contact_id=contact_id)
    return await post_event(client, body)


def moodle_user(fake: Any, username: str) -> dict[str, Any] | None:
    return next((u for u in fake.users.values() if u["username"] == username and not u.get("deleted")), None)


async def wait_for(check: Callable[[], Awaitable[bool]], *, timeout: float = 20.0, every: float = 0.05) -> None:
    """Wait on a condition with a deadline (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


async def stop_worker(worker: Any, task: asyncio.Task[Any]) -> None:
    """Stop an in-process arq worker once its jobs are finished (closing mid-job cancels arq's bookkeeping)."""

    async def idle() -> bool:
        return not worker.tasks

    try:
        await wait_for(idle, timeout=20)
        await worker.close()
    finally:
        end_loops(worker)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def end_loops(worker: Any) -> None:
    """Cancel the worker's own loops (sweeper, reconcile, alerts): arq's close() skips the shutdown hook that
    would when a cancelled job re-raises, and a sweeper left running holds its lease into later tests."""
    for loop in worker.ctx.get("loops", []):
        loop.cancel()
