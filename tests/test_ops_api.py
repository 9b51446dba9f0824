"""The operator API, health and readiness."""

from __future__ import annotations

from typing import Any

import httpx

from app.checks import check_moodle
from app.runtime import Runtime
from tests.conftest import bearer
from tests.helpers import moodle_user, post_contact, process_all


async def test_ops_endpoints_need_the_token(client: httpx.AsyncClient) -> None:
    for path in ("/api/events", "/api/events/1", "/api/links/users"):
        assert (await client.get(path)).status_code == 401
        assert (await client.get(path, headers=bearer("coursesales"))).status_code == 401
    assert (await client.post("/api/events/1/replay")).status_code == 401


async def test_events_list_filter_detail_and_replay(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    await post_contact(client, "d-1")
    await post_contact(client, "d-2", contact_id=2, username="bob", email="bob@example.com", password=None)
    await process_all(runtime)
    page = (await client.get("/api/events", headers=bearer("api"))).json()
    assert page["total"] == 2 and [e["status"] for e in page["items"]] == ["failed", "done"]
    failed = (await client.get("/api/events", params={"status": "failed"}, headers=bearer("api"))).json()
    assert failed["total"] == 1 and "no password" in failed["items"][0]["last_error"]
    assert (await client.get("/api/events", params={"source": "compat"}, headers=bearer("api"))).json()["total"] == 0
    assert (await client.get("/api/events", params={"status": "bogus"}, headers=bearer("api"))).status_code == 422
    detail = (await client.get(f"/api/events/{failed['items'][0]['id']}", headers=bearer("api"))).json()
    assert detail["attempts"] == 1 and detail["attempt_log"][0]["outcome"] == "failed"
    assert "password" not in detail["payload"]["contact"]
    assert (await client.get("/api/events/999999", headers=bearer("api"))).status_code == 404

    # The operator fixes Moodle, then replays: the event runs again, and a replayed done event changes nothing.
    done_id = page["items"][1]["id"]
    calls_before = len(moodle_fake.calls)
    r = await client.post(f"/api/events/{done_id}/replay", headers=bearer("api"))
    assert r.status_code == 200 and r.json()["status"] == "queued"
    await process_all(runtime)
    writes = [
        c for c in moodle_fake.calls[calls_before:] if c[0] in ("core_user_create_users", "core_user_update_users")
    ]
    assert writes == [], "a replay never doubles an effect"
    detail = (await client.get(f"/api/events/{done_id}", headers=bearer("api"))).json()
    assert detail["status"] == "done" and len(detail["attempt_log"]) == 2


async def test_an_events_attempt_log_shows_its_running_attempt_then_the_finished_one(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    """A running attempt has no row until it is over: the detail shows it from the event (claimed at its
    updated_at); once finished, its row alone, written once."""
    from app.db import claim, inbox
    from app.db.inbox import Outcome
    from app.db.models import Event, EventStatus

    event_id = (await post_contact(client, "d-run")).json()["event_id"]
    async with runtime.sessions() as s:
        assert [e.id for e in await claim.claim(s, kinds=["contact.upserted"], limit=1, lease_seconds=60)] == [event_id]
        await s.commit()
    detail = (await client.get(f"/api/events/{event_id}", headers=bearer("api"))).json()
    assert detail["status"] == "running"
    (shown,) = detail["attempt_log"]
    assert (shown["number"], shown["outcome"], shown["finished_at"], shown["error"]) == (1, "running", None, None)
    assert shown["started_at"] == detail["updated_at"]
    async with runtime.sessions() as s:
        held = await s.get(Event, event_id)
        assert held is not None
        await inbox.finish_all(s, [(held, Outcome(EventStatus.failed, "refused"))])
        await s.commit()
    detail = (await client.get(f"/api/events/{event_id}", headers=bearer("api"))).json()
    (finished,) = detail["attempt_log"]
    assert (finished["number"], finished["outcome"], finished["error"]) == (1, "failed", "refused")
    assert finished["started_at"] == shown["started_at"] and finished["finished_at"] is not None


async def test_links_users(client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any) -> None:
    await post_contact(client, "d-1")
    await process_all(runtime)
    page = (await client.get("/api/links/users", headers=bearer("api"))).json()
    uid = moodle_user(moodle_fake, "jane.doe@example.com")["id"]  # type: ignore[index]
    assert page["total"] == 1
    assert page["items"][0]["moodle_user_id"] == uid and page["items"][0]["contact_id"] == 1234
    one = (
        await client.get("/api/links/users", params={"username": "Jane.Doe@example.com"}, headers=bearer("api"))
    ).json()
    assert one["total"] == 1


async def test_health_and_readiness(client: httpx.AsyncClient, runtime: Runtime) -> None:
    runtime.settings.coursesales.url = ""
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    body = r.json()
    assert r.status_code == 200 and body["checks"]["database"]["ok"] and body["checks"]["redis"]["ok"]
    assert (
        body["checks"]["coursesales"]["configured"] is False
        and "not configured yet" in body["checks"]["coursesales"]["detail"]
    )
    assert body["checks"]["inbound"]["coursesales.token"] is True


async def test_readiness_without_redis_is_still_ready(client: httpx.AsyncClient, runtime: Runtime) -> None:
    from arq.connections import RedisSettings

    from app.jobs.queue import Queue, connect

    real = runtime.queue
    runtime.queue = Queue(connect(RedisSettings(host="127.0.0.1", port=1)))
    try:
        r = await client.get("/readyz")
        assert r.status_code == 200 and r.json()["checks"]["redis"]["ok"] is False
    finally:
        await runtime.queue.close()
        runtime.queue = real


async def test_check_lists_missing_functions_and_hidden_names(runtime: Runtime, moodle_fake: Any) -> None:
    moodle_fake.functions.remove("core_course_duplicate_course")
    findings = await check_moodle(runtime.moodle)
    levels = {f.level for f in findings}
    text = " ".join(f.message for f in findings)
    assert "error" in levels and "core_course_duplicate_course" in text
    assert "moodle/site:viewfullnames" in text, "Moodle 4.3 hides names from this token (recording 040)"
    assert "site administrator" not in text
    moodle_fake.token_is_siteadmin = True
    warned = [f for f in await check_moodle(runtime.moodle) if "site administrator" in f.message]
    assert [f.level for f in warned] == ["warn"]
    moodle_fake.token = "wrong"
    (only,) = await check_moodle(runtime.moodle)
    assert only.level == "error" and "invalidtoken" in only.message
    moodle_fake.token = "test-token"
    moodle_fake.fail_next(1, "timeout")
    (unreachable,) = await check_moodle(runtime.moodle)
    assert unreachable.message.startswith(f"could not connect to Moodle at {runtime.settings.moodle.url}")
    assert "refused" not in unreachable.message


async def test_check_coursesales_login_and_fields(runtime: Runtime, coursesales_fake: Any) -> None:
    from app.checks import check_coursesales

    findings = await check_coursesales(runtime.coursesales, runtime.settings.courses)
    text = " ".join(f.message for f in findings)
    assert {f.level for f in findings} <= {"ok", "warn"} and "login works" in text
    assert "Moodle category field: 8620" in text, "found by its name in the recorded form"
    coursesales_fake.password = "changed"
    (only,) = await check_coursesales(runtime.coursesales, runtime.settings.courses)
    assert only.level == "error" and "SOAP_PASSWORD" not in only.message
