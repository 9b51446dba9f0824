"""Fair workers (issue 21): one tenant's backlog never starves another's work; one tenant's upstream state holds
its own work only."""

from __future__ import annotations

import json
from typing import Any

from arq.constants import job_key_prefix
from sqlalchemy import select

from app.db.models import Event
from app.db.tenancy import ALL_TENANTS
from app.jobs import tasks
from app.jobs.queue import DEFAULT_QUEUE
from app.runtime import Runtime
from app.sync import upstreams
from tests.conftest import TEST_TOKENS
from tests.helpers import contact_delivery
from tests.test_tenant_hub import BETA, Two, cs_auth, registration, settings, two  # noqa: F401  (fixtures)


async def _next_job(home: Runtime) -> int | None:
    """Take the first job of the default queue, as a worker would: its event id."""
    assert home.queue is not None
    redis = home.queue.redis
    first = await redis.zrange(DEFAULT_QUEUE, 0, 0)
    if not first:
        return None
    job_id = first[0].decode() if isinstance(first[0], bytes) else first[0]
    data: Any = await redis.get(job_key_prefix + job_id)
    await redis.zrem(DEFAULT_QUEUE, job_id)
    await redis.delete(job_key_prefix + job_id)
    return int(json.loads(data)["a"][0]) if data else await _next_job(home)


async def _status(home: Runtime, event_id: int) -> str:
    async with home.sessions() as s:
        event = (
            await s.execute(select(Event).where(Event.id == event_id).execution_options(**ALL_TENANTS))
        ).scalar_one()
        return event.status


async def _post_contacts(two: Two, count: int) -> None:  # noqa: F811
    for n in range(count):
        r = await two.client.post(
            "/webhooks/coursesales",
            json=contact_delivery(f"a-{n}", contact_id=10_000 + n, username=f"learner{n}@example.com",
                                  email=f"learner{n}@example.com"),
            headers=cs_auth(TEST_TOKENS["coursesales"]),
        )  # fmt: skip
        assert r.status_code == 202, r.text


async def test_a_large_backlog_of_one_tenant_does_not_hold_back_another(two: Two) -> None:  # noqa: F811
    c = two.client
    two.home.settings.moodle.max_batch = 2  # a job of the default tenant drains 20 rounds of 2 when alone
    await _post_contacts(two, 200)
    r = await c.post(
        "/t/beta/webhooks/coursesales", json=registration("b-1"), headers=cs_auth(BETA["WEBHOOKS__COURSESALES_TOKEN"])
    )
    beta_event = r.json()["event_id"]
    jobs = 0
    while await _status(two.home, beta_event) not in ("done", "failed", "needs_review", "retrying"):
        event_id = await _next_job(two.home)
        assert event_id is not None, "the queue ran dry before beta's event was worked"
        await tasks.process_event({"runtime": two.home}, event_id)
        jobs += 1
    # Beta's turn came with the second job, not after the default tenant's 200 waiting events (100 rounds of 2).
    assert jobs <= 2, jobs
    # And the default tenant's backlog is drained all the same, by the jobs still queued.
    while (event_id := await _next_job(two.home)) is not None:
        await tasks.process_event({"runtime": two.home}, event_id)
    async with two.home.sessions() as s:
        left = (await s.execute(select(Event).where(Event.status.in_(["accepted", "queued"])))).scalars().all()
    assert left == []


async def test_one_tenants_moodle_away_holds_that_tenants_work_only(two: Two) -> None:  # noqa: F811
    async with two.home.sessions() as s:  # the default tenant's Moodle is in maintenance
        await upstreams.mark(s, upstreams.Fault(upstreams.MOODLE, upstreams.UNAVAILABLE, "default's Moodle upgrade"))
        await s.commit()
    c = two.client
    a = await c.post("/webhooks/coursesales", json=contact_delivery("m-1"), headers=cs_auth(TEST_TOKENS["coursesales"]))
    b = await c.post(
        "/t/beta/webhooks/coursesales",
        json=contact_delivery("m-1"),
        headers=cs_auth(BETA["WEBHOOKS__COURSESALES_TOKEN"]),
    )
    for r in (a, b):
        await tasks.process_event({"runtime": two.home}, r.json()["event_id"])
    assert await _status(two.home, b.json()["event_id"]) == "done"
    assert await _status(two.home, a.json()["event_id"]) in ("accepted", "queued")  # held, waiting for its Moodle


async def test_each_tenant_has_its_own_caps_on_calls_in_flight(two: Two) -> None:  # noqa: F811
    """A tenant's calls wait for its own cap only: beta at one call at a time, default's calls beside them."""
    import asyncio

    import httpx

    from app.runtime import tenant_runtime

    in_flight: dict[str, int] = {}
    most: dict[str, int] = {}

    async def slow(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        in_flight[host] = in_flight.get(host, 0) + 1
        most[host] = max(most.get(host, 0), in_flight[host])
        await asyncio.sleep(0.05)
        in_flight[host] -= 1
        return httpx.Response(200, json={"result": "ok"})

    transport = httpx.MockTransport(slow)
    beta, _ = await two.home.hub.by_slug("beta")
    assert beta is not None
    capped = beta.settings.model_copy(deep=True)
    capped.coursesales.max_in_flight = capped.moodle.max_in_flight = 1
    two.home.transports = (transport, transport)
    one_at_a_time = tenant_runtime(two.home, capped, tenant_id=beta.tenant_id, slug="beta")
    default_rt = two.home
    await default_rt.close_upstreams()  # made again, on the recording transport
    try:
        calls = [one_at_a_time.coursesales.request("t", {}) for _ in range(4)]
        calls += [default_rt.coursesales.request("t", {}) for _ in range(4)]
        await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await one_at_a_time.close()
    assert most["coursesales-b.test"] == 1  # beta's own cap
    assert most["coursesales.test"] >= 2  # default's calls were not held behind beta's


def test_the_tenants_with_waiting_work_are_read_on_sqlite_too(tmp_path: Any) -> None:
    """The newcomer's default database is SQLite: the fairness query is written for both (the suite runs on
    PostgreSQL)."""
    import asyncio

    from sqlalchemy import text

    from app.cli import run_migrations
    from app.db.engine import make_engine
    from app.jobs.fairness import _WITH_FRESH_WORK

    url = f"sqlite+aiosqlite:///{tmp_path / 'fair.db'}"
    run_migrations(url, "head")

    async def read() -> list[int]:
        engine = make_engine(url)
        try:
            async with engine.begin() as conn:
                for n, (tenant, status) in enumerate([(7, "queued"), (0, "accepted"), (3, "done"), (7, "accepted")]):
                    await conn.execute(
                        text(
                            "INSERT INTO events (tenant_id, source, kind, dedupe_key, body_hash, status, attempts, "
                            "created_at, updated_at) VALUES (:t, 'coursesales', 'contact.upserted', :k, '-', :s, 0, "
                            "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                        ),
                        {"t": tenant, "k": f"k{n}", "s": status},
                    )
            async with engine.connect() as conn:
                return [int(i) for i in (await conn.execute(_WITH_FRESH_WORK)).scalars()]
        finally:
            await engine.dispose()

    assert asyncio.run(read()) == [0, 7]  # tenant 3 has nothing waiting


async def test_a_turn_finds_the_oldest_waiting_work_of_its_lane_behind_any_number_of_the_other(two: Two) -> None:  # noqa: F811
    """Sixty course dates waiting on the slow lane do not hide a contact waiting on the fast one."""
    from app.events.registry import SLOW_KINDS, Lane
    from app.jobs import fairness

    beta, _ = await two.home.hub.by_slug("beta")
    assert beta is not None
    slow_kind = sorted(SLOW_KINDS)[0]
    async with beta.sessions() as s:
        for n in range(60):
            s.add(Event(source="coursesales", kind=slow_kind, dedupe_key=f"slow-{n}", body_hash="-", status="queued"))
        s.add(Event(source="coursesales", kind="contact.upserted", dedupe_key="fast-1", body_hash="-", status="queued"))
        await s.commit()
    fast = await fairness.oldest_waiting(beta, Lane.fast)
    slow = await fairness.oldest_waiting(beta, Lane.slow)
    assert fast is not None and fast[1] == "contact.upserted"
    assert slow is not None and slow[1] == slow_kind


async def test_a_drain_that_began_alone_gives_way_when_another_tenants_work_comes_in(
    two: Two,  # noqa: F811
    monkeypatch: Any,
) -> None:
    """A job that found its tenant alone drains up to twenty rounds; when another tenant's event arrives between two
    of them, it stops after the round it is in and queues its own event again, behind the other tenant's turn."""
    two.home.settings.moodle.max_batch = 2
    await _post_contacts(two, 60)
    first = await _next_job(two.home)
    assert first is not None
    real_round, rounds, beta_event = tasks._round, [], []

    async def round_then_beta_arrives(rt: Runtime, family: Any, *, own: int | None = None, wide: bool = False) -> int:
        n = await real_round(rt, family, own=own, wide=wide)
        rounds.append(n)
        if not beta_event:
            r = await two.client.post(
                "/t/beta/webhooks/coursesales",
                json=registration("b-late"),
                headers=cs_auth(BETA["WEBHOOKS__COURSESALES_TOKEN"]),
            )
            beta_event.append(r.json()["event_id"])
        return n

    monkeypatch.setattr(tasks, "_round", round_then_beta_arrives)
    outcome = await tasks.process_event({"runtime": two.home}, first)
    # One round, not twenty: begun alone, a wide one (max_in_flight arrays of max_batch, 4 x 2).
    assert outcome == "processed 8" and rounds == [8]
    assert two.home.queue is not None
    queued = [
        j.decode() if isinstance(j, bytes) else j for j in await two.home.queue.redis.zrange(DEFAULT_QUEUE, 0, -1)
    ]
    # Its drain goes on behind beta's turn, from default's oldest waiting event (its own was in the round).
    assert any(j.startswith(f"event:{first + 8}:turn:") for j in queued), queued
    monkeypatch.setattr(tasks, "_round", real_round)
    assert await _status(two.home, beta_event[0]) in ("accepted", "queued")
    jobs = 0
    while await _status(two.home, beta_event[0]) in ("accepted", "queued"):
        event_id = await _next_job(two.home)
        assert event_id is not None
        await tasks.process_event({"runtime": two.home}, event_id)
        jobs += 1
    assert jobs <= 2, jobs


async def test_the_turn_goes_to_the_tenant_with_the_fewest_rounds_running(two: Two) -> None:  # noqa: F811
    """Fair by the worker's slots: while three of default's rounds run in this process and beta has none, the next
    turn is beta's, even though beta was served last (round the tenants alone, it would be default's)."""
    from app.jobs import fairness

    await _post_contacts(two, 3)
    r = await two.client.post(
        "/t/beta/webhooks/coursesales", json=registration("b-1"), headers=cs_auth(BETA["WEBHOOKS__COURSESALES_TOKEN"])
    )
    assert r.status_code == 202
    beta, _ = await two.home.hub.by_slug("beta")
    assert beta is not None
    turns = two.home.hub.turns
    turns.last_served = beta.tenant_id
    with fairness.working(two.home, 0), fairness.working(two.home, 0), fairness.working(two.home, 0):
        assert turns.running[0] == 3
        turn = await fairness.turn(two.home, two.home)
    assert turn.runtime.tenant_id == beta.tenant_id and turn.shared
    assert 0 not in turns.running  # the count goes when the rounds end
    # With the slots even, the turn goes round: default, whose turn follows beta's.
    assert (await fairness.turn(two.home, two.home)).runtime.tenant_id == 0


async def test_a_job_whose_event_was_taken_serves_the_tenant_with_work_waiting(two: Two) -> None:  # noqa: F811
    """At the end of a drain the queue holds the jobs of events its rounds already took, ahead of the other
    tenant's own jobs; each of those job starts is a turn for the tenant whose work waits (here beta, alone)."""
    await _post_contacts(two, 1)
    first = await _next_job(two.home)
    assert first is not None
    await tasks.process_event({"runtime": two.home}, first)
    assert await _status(two.home, first) == "done"
    r = await two.client.post(
        "/t/beta/webhooks/coursesales", json=registration("b-1"), headers=cs_auth(BETA["WEBHOOKS__COURSESALES_TOKEN"])
    )
    beta_event = r.json()["event_id"]
    outcome = await tasks.process_event({"runtime": two.home}, first)  # a stale job of default's, run again
    assert outcome == "served tenant beta's turn (already done)"
    assert await _status(two.home, beta_event) not in ("accepted", "queued")
