"""POST /webhooks/coursesales: authentication, validation, the inbox and its duplicates."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from app.jobs.queue import DEFAULT_QUEUE
from app.runtime import Runtime
from tests.conftest import TEST_TOKENS
from tests.helpers import contact_delivery, events, links, moodle_user, post_contact, process_all


async def test_same_delivery_three_times_one_user_one_job(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    answers = [await post_contact(client, "d-1") for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 202]
    first = answers[0].json()
    assert first["duplicate"] is False and first["status"] == "queued"
    assert all(a.json()["event_id"] == first["event_id"] and a.json()["duplicate"] for a in answers[1:])
    assert await runtime.queue.redis.zcard(DEFAULT_QUEUE) == 1
    assert len(await events(runtime)) == 1
    await process_all(runtime)
    user = moodle_user(moodle_fake, "jane.doe@example.com")
    assert user is not None and user["firstname"] == "Jane"
    creates = [c for c in moodle_fake.calls if c[0] == "core_user_create_users"]
    assert len(creates) == 1
    again = await post_contact(client, "d-1")
    assert again.json() == {"event_id": first["event_id"], "status": "done", "duplicate": True}


async def test_two_identical_deliveries_at_once_make_one(client: httpx.AsyncClient, runtime: Runtime) -> None:
    a, b = await asyncio.gather(post_contact(client, "d-same"), post_contact(client, "d-same"))
    assert {a.status_code, b.status_code} == {202}
    assert a.json()["event_id"] == b.json()["event_id"]
    assert sorted([a.json()["duplicate"], b.json()["duplicate"]]) == [False, True]
    assert len(await events(runtime)) == 1
    assert await runtime.queue.redis.zcard(DEFAULT_QUEUE) == 1


async def test_same_id_different_body_is_422(client: httpx.AsyncClient, runtime: Runtime) -> None:
    assert (await post_contact(client, "d-2")).status_code == 202
    clash = await post_contact(client, "d-2", firstname="Janet")
    assert clash.status_code == 422
    assert "d-2" in clash.text and "different body" in clash.text
    assert len(await events(runtime)) == 1


async def test_invalid_contact_named_field_and_rule_nothing_stored(client: httpx.AsyncClient, runtime: Runtime) -> None:
    r = await post_contact(client, "d-bad", username="Jane Doe", password="password1")
    assert r.status_code == 422
    detail = r.json()["detail"]
    fields = {d["loc"][-1]: d["msg"] for d in detail}
    assert "' '" in fields["username"]
    assert "upper case" in fields["password"] and "special character" in fields["password"]
    assert "password1" not in r.text
    missing = await client.post(
        "/webhooks/coursesales",
        json={"type": "contact.upserted", "id": "d-x", "contact": {"username": "x"}},
        headers={"Authorization": f"Bearer {TEST_TOKENS['coursesales']}"},
    )
    assert missing.status_code == 422
    assert {tuple(d["loc"][-1:]) for d in missing.json()["detail"]} >= {("firstname",), ("lastname",), ("email",)}
    assert await events(runtime) == []


async def test_unknown_type_and_malformed_json(client: httpx.AsyncClient) -> None:
    auth = {"Authorization": f"Bearer {TEST_TOKENS['coursesales']}"}
    r = await client.post("/webhooks/coursesales", json={"type": "nope", "id": "1"}, headers=auth)
    assert r.status_code == 422 and "contact.upserted" in r.text
    r = await client.post("/webhooks/coursesales", content=b"{not json", headers=auth)
    assert r.status_code == 400 and "JSON" in r.text


async def test_auth_required_and_per_source(client: httpx.AsyncClient, runtime: Runtime) -> None:
    body = contact_delivery("d-auth")
    assert (await client.post("/webhooks/coursesales", json=body)).status_code == 401
    wrong = {"Authorization": f"Bearer {TEST_TOKENS['moodle']}"}  # the Moodle token must not forge CourseSales events
    assert (await client.post("/webhooks/coursesales", json=body, headers=wrong)).status_code == 401
    assert await events(runtime) == []


async def test_standard_webhooks_signature(client: httpx.AsyncClient, runtime: Runtime) -> None:
    raw = json.dumps(contact_delivery("d-signed"))
    hook = Webhook(TEST_TOKENS["cs_whsec"])
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": hook.sign("msg_1", now, raw),
        "content-type": "application/json",
    }
    ok = await client.post("/webhooks/coursesales", content=raw, headers=headers)
    assert ok.status_code == 202, ok.text
    tampered = await client.post("/webhooks/coursesales", content=raw.replace("Jane", "Eve"), headers=headers)
    assert tampered.status_code == 401
    old = now - timedelta(minutes=6)
    stale = {
        **headers,
        "webhook-timestamp": str(int(old.timestamp())),
        "webhook-signature": hook.sign("msg_1", old, raw),
    }
    assert (await client.post("/webhooks/coursesales", content=raw, headers=stale)).status_code == 401
    partial = {"webhook-id": "msg_1", "content-type": "application/json"}
    assert (await client.post("/webhooks/coursesales", content=raw, headers=partial)).status_code == 400
    assert len(await events(runtime)) == 1


async def test_accepted_while_redis_down(client: httpx.AsyncClient, runtime: Runtime) -> None:
    from arq.connections import RedisSettings

    from app.jobs.queue import Queue, connect

    real = runtime.queue
    runtime.queue = Queue(connect(RedisSettings(host="127.0.0.1", port=1)))  # nothing listens there
    try:
        started = time.monotonic()
        r = await post_contact(client, "d-noredis")
        assert r.status_code == 202
        assert r.json()["status"] == "accepted"
        assert time.monotonic() - started < 5
    finally:
        await runtime.queue.close()
        runtime.queue = real
    (event,) = await events(runtime)
    assert event.status == "accepted" and event.secret and "S3cret" not in event.secret
    assert await links(runtime) == []


def test_the_hot_path_is_served_without_fastapis_dependency_solving(runtime: Runtime) -> None:
    """The webhook is served by a plain Starlette route ahead of its documented FastAPI route (17% of a delivery's
    CPU went to FastAPI's per-request wrapping); the FastAPI route still documents it."""
    from fastapi.routing import APIRoute
    from starlette.routing import Route

    from app.main import create_app

    app = create_app(runtime.settings, runtime=runtime)
    first = app.router.routes[0]
    assert isinstance(first, Route) and not isinstance(first, APIRoute) and first.path == "/webhooks/coursesales"
    assert "post" in app.openapi()["paths"]["/webhooks/coursesales"]


def _signed(raw: str, msg_id: str, at: float) -> dict[str, str]:
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(int(at), tz=UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at)),
        "webhook-signature": Webhook(TEST_TOKENS["cs_whsec"]).sign(msg_id, when, raw),
        "content-type": "application/json",
    }


async def test_signature_window_is_the_configured_tolerance_both_ways(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """webhooks.tolerance_seconds is honoured: inside it (past or future) accepted, outside refused, each edge."""
    runtime.settings.webhooks.tolerance_seconds = 60
    now = time.time()
    for n, offset in enumerate((-50, 50)):
        raw = json.dumps(contact_delivery(f"d-window-{n}"))
        inside = await client.post(
            "/webhooks/coursesales", content=raw, headers=_signed(raw, f"msg_in{n}", now + offset)
        )
        assert inside.status_code == 202, inside.text
    for offset, word in ((-70, "too old"), (70, "too new"), (-3600, "too old"), (3600, "too new")):
        raw = json.dumps(contact_delivery(f"d-out-{offset}"))
        outside = await client.post("/webhooks/coursesales", content=raw, headers=_signed(raw, "msg_out", now + offset))
        assert outside.status_code == 401 and word in outside.text, (offset, outside.text)
    runtime.settings.webhooks.tolerance_seconds = 7200
    raw = json.dumps(contact_delivery("d-wide"))
    wide = await client.post("/webhooks/coursesales", content=raw, headers=_signed(raw, "msg_wide", now - 3600))
    assert wide.status_code == 202, wide.text
    assert len(await events(runtime)) == 3
