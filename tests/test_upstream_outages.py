"""What real Moodle does to a sync (recordings 156-158): a maintenance window, a suspended token user, a function
missing from the token's service, a refused CourseSales login. Each is one state of the upstream, shared by every
process: the work waits (no attempt, nothing failed), /readyz names it, and it resumes by itself."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from app.jobs.probe import probe_all
from app.jobs.worker import make_worker
from app.runtime import Runtime
from tests.conftest import bearer
from tests.helpers import events, post_contact, post_event, process_all, stop_worker, wait_for

CONTACTS = 12


async def post_contacts(client: httpx.AsyncClient, n: int = CONTACTS) -> None:
    for i in range(n):
        r = await post_contact(client, f"o-{i}", contact_id=i + 1, username=f"learner{i}", email=f"l{i}@example.com")
        assert r.status_code == 202


async def ready(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/readyz")
    assert r.status_code == 200, "the service itself is fine: an upstream's state never makes it not ready"
    return r.json()["checks"]


async def all_done(rt: Runtime) -> bool:
    return all(e.status == "done" for e in await events(rt))


async def nothing_failed(rt: Runtime) -> None:
    rows = await events(rt)
    assert not [e for e in rows if e.status in ("failed", "needs_review", "retrying")], [e.status for e in rows]


def workers(rt: Runtime, n: int = 2) -> list[tuple[Any, asyncio.Task[Any]]]:
    out = []
    for _ in range(n):
        w = make_worker(rt.settings, runtime=rt, handle_signals=False, poll_delay=0.05)
        out.append((w, asyncio.create_task(w.async_run())))
    return out


async def test_a_maintenance_window_costs_the_window(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    """A 20 s CLI maintenance (HTTP 503, Retry-After: 300): nothing fails, and with two workers everything is done
    within 30 s of Moodle answering again (the header's 300 s is not waited out)."""
    runtime.settings.moodle.probe_seconds = 1
    moodle_fake.maintenance(True)
    started = time.monotonic()
    await post_contacts(client)
    running = workers(runtime)
    try:

        async def unavailable() -> bool:
            return (await ready(client))["moodle"]["state"] == "unavailable"

        await wait_for(unavailable, timeout=15)
        checks = await ready(client)
        assert "maintenance" in checks["moodle"]["reason"] and checks["moodle"]["since"]
        metrics = (await client.get("/metrics")).text
        assert 'sync_upstream_state{state="unavailable",upstream="moodle"} 1.0' in metrics
        await asyncio.sleep(max(0.0, 20 - (time.monotonic() - started)))
        await nothing_failed(runtime)
        assert all(e.attempts == 0 and e.waiting_for for e in await events(runtime)), "no attempt spent"
        moodle_fake.maintenance(False)
        back = time.monotonic()
        await wait_for(lambda: all_done(runtime), timeout=30)
        assert time.monotonic() - back < 30
    finally:
        for w, task in running:
            await stop_worker(w, task)
    await nothing_failed(runtime)
    assert (await ready(client))["moodle"]["state"] == "ok"


async def test_a_suspended_token_user_waits_and_resumes_without_a_replay(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    runtime.settings.moodle.probe_seconds = 0.5
    moodle_fake.suspend_token_user(True)
    await post_contacts(client, 4)
    running = workers(runtime, 1)
    try:

        async def refused() -> bool:
            return (await ready(client))["moodle"]["state"] == "auth_failed"

        await wait_for(refused, timeout=15)
        moodle = (await ready(client))["moodle"]
        assert "wsaccessusersuspended" in moodle["reason"] and "token" in moodle["fix"]

        async def all_say_why() -> bool:
            listed = (await client.get("/api/events", headers=bearer("api"))).json()["items"]
            return len(listed) == 4 and all("wsaccessusersuspended" in (e["waiting_for"] or "") for e in listed)

        await wait_for(all_say_why, timeout=15)
        await nothing_failed(runtime)
        moodle_fake.suspend_token_user(False)
        back = time.monotonic()
        await wait_for(lambda: all_done(runtime), timeout=30)
        assert time.monotonic() - back < 30
    finally:
        for w, task in running:
            await stop_worker(w, task)
    assert [a["action"] for a in (await client.get("/api/audit", headers=bearer("api"))).json()["items"]] == []


async def test_a_function_missing_from_the_service_waits_named(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    """The probe checks the token's service lists every function: it does not resume work only to fail again."""
    moodle_fake.remove_function("core_user_create_users")
    await post_contacts(client, 2)
    await process_all(runtime)
    await nothing_failed(runtime)
    report = await probe_all(runtime, "test", force=True)
    assert report["moodle"]["state"] == "auth_failed"
    assert "core_user_create_users" in report["moodle"]["reason"], report
    await process_all(runtime)
    assert not await all_done(runtime)
    moodle_fake.add_function("core_user_create_users")
    probed = await client.post("/api/upstreams/probe", headers=bearer("api"))
    assert probed.status_code == 200 and probed.json()["moodle"] == {"state": "ok"}
    await process_all(runtime)
    assert await all_done(runtime)


async def test_a_refused_coursesales_login_waits_only_the_work_that_needs_it(
    client: httpx.AsyncClient, runtime: Runtime, coursesales_fake: Any, catalogue: Any
) -> None:
    coursesales_fake.password = "changed-by-someone"
    changed = await post_event(client, {"type": "course_date.changed", "id": "cs-1", "course_date_id": 9000})
    contact = (await post_contact(client, "cs-2")).json()["event_id"]
    await process_all(runtime)
    by_id = {e.id: e for e in await events(runtime)}
    assert by_id[contact].status == "done", "a contact needs no CourseSales call"
    waiting = by_id[changed.json()["event_id"]]
    assert waiting.status in ("accepted", "queued") and "CourseSales refuses the login" in waiting.waiting_for
    assert (await ready(client))["coursesales"]["state"] == "auth_failed"
    coursesales_fake.password = "SOAP_PASSWORD"
    assert (await probe_all(runtime, "test", force=True))["coursesales"] == {"state": "ok"}
    await process_all(runtime)
    await nothing_failed(runtime)


async def test_check_shows_the_work_the_service_holds(runtime: Runtime, moodle_fake: Any) -> None:
    from app.cli import _held_upstreams

    assert await _held_upstreams(runtime) == []
    moodle_fake.suspend_token_user(True)
    await probe_all(runtime, "test", force=True)
    (finding,) = await _held_upstreams(runtime)
    assert finding.level == "warn" and "moodle: auth_failed" in finding.message
    assert "wsaccessusersuspended" in finding.message


async def test_a_long_wait_raises_a_second_alert_once(runtime: Runtime, moodle_fake: Any) -> None:
    from datetime import timedelta

    from sqlalchemy import select, update

    from app.db.models import Alert, UpstreamState
    from app.db.types import utcnow

    moodle_fake.suspend_token_user(True)
    await probe_all(runtime, "test", force=True)
    async with runtime.sessions() as s:  # the spell began longer ago than alerts.waiting_minutes
        await s.execute(update(UpstreamState).values(since=utcnow() - timedelta(minutes=31)))
        await s.commit()
    await probe_all(runtime, "test")
    await probe_all(runtime, "test")
    async with runtime.sessions() as s:
        causes = [a.cause for a in (await s.execute(select(Alert).order_by(Alert.id))).scalars()]
    assert causes == ["upstream.moodle.waiting"], "one 'still waiting' alert, not one a probe"


async def test_a_worker_start_releases_work_held_for_an_upstream_configured_since(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    moodle = runtime.settings.moodle
    runtime.settings.moodle = moodle.model_copy(update={"url": ""})
    await post_contacts(client, 3)
    await process_all(runtime)
    assert {e.status for e in await events(runtime)} == {"queued"}
    await runtime.queue.redis.flushdb()  # their jobs ran and found Moodle not configured
    runtime.settings.moodle = moodle  # configured; the sweeper's next round is an hour away
    runtime.settings.jobs.sweep_interval_seconds = 3600
    async with runtime.sessions() as s:  # another process holds the sweeper's lease
        from app.db import leases

        assert await leases.acquire(s, "sweeper", "elsewhere", 3600)
        await s.commit()
    ((worker, task),) = workers(runtime, 1)
    try:
        await wait_for(lambda: all_done(runtime), timeout=20)
    finally:
        await stop_worker(worker, task)
