"""Operator control: resolve, bulk replay, pause and resume, link and unlink, audit, metrics, retention, body limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import update

from app.db.models import Event
from app.db.types import utcnow
from app.jobs.sweeper import sweep
from app.runtime import Runtime
from tests.conftest import TEST_TOKENS, bearer
from tests.helpers import events, moodle_user, post_contact, process_all

OPS = bearer("api")


async def test_resolve_failed_event_with_note(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await post_contact(client, "d-1", password=None)
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "failed"
    assert (await client.post(f"/api/events/{event.id}/resolve", json={}, headers=OPS)).status_code == 422, (
        "a note is required"
    )
    r = await client.post(f"/api/events/{event.id}/resolve", json={"note": "contact has no portal login"}, headers=OPS)
    assert r.status_code == 200 and r.json()["status"] == "done"
    assert r.json()["result"]["resolved"] == "contact has no portal login"
    again = await client.post(f"/api/events/{event.id}/resolve", json={"note": "x"}, headers=OPS)
    assert again.status_code == 409
    trail = (await client.get("/api/audit", headers=OPS)).json()
    assert trail["items"][0]["action"] == "resolve" and trail["items"][0]["target"] == f"event:{event.id}"


async def test_bulk_replay_by_filter_no_second_effect(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    from tests.test_users_sync import seed_user

    # Every event fails for good: each email belongs to an account someone made by hand.
    taken = [seed_user(moodle_fake, f"other{n}", f"u{n}@example.com") for n in range(3)]
    for n in range(3):
        await post_contact(client, f"d-{n}", contact_id=n + 1, username=f"u{n}", email=f"u{n}@example.com")
    await process_all(runtime)
    assert {e.status for e in await events(runtime)} == {"failed"}
    for account in taken:  # the admin gave those accounts their own emails
        moodle_fake.users[account["id"]]["email"] = f"{account['username']}@staff.example.com"
    r = await client.post("/api/events/replay", json={"status": "failed", "kind": "contact.upserted"}, headers=OPS)
    assert r.status_code == 200 and len(r.json()["replayed"]) == 3
    await process_all(runtime)
    assert {e.status for e in await events(runtime)} == {"done"}
    creates = len([c for c in moodle_fake.calls if c[0] == "core_user_create_users"])
    r = await client.post("/api/events/replay", json={"status": "done"}, headers=OPS)
    await process_all(runtime)
    assert len([c for c in moodle_fake.calls if c[0] == "core_user_create_users"]) == creates, (
        "replaying done events changes nothing"
    )
    assert len([u for u in moodle_fake.users.values() if u["username"].startswith("u")]) == 3
    assert (await client.post("/api/events/replay", json={"status": "bogus"}, headers=OPS)).status_code == 422


async def test_pause_keeps_events_and_resume_processes_them(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    before = datetime.now(UTC)
    assert (await client.post("/api/pause", json={"note": "Moodle upgrade"}, headers=OPS)).json()["paused"] is True
    state = (await client.get("/api/pause", headers=OPS)).json()
    assert state["paused"] is True and state["by"] == "api"
    assert before - timedelta(seconds=1) <= datetime.fromisoformat(state["since"]) <= datetime.now(UTC), "since when"
    r = await post_contact(client, "d-1")
    assert r.status_code == 202
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "queued" and moodle_user(moodle_fake, "jane.doe@example.com") is None
    assert (await client.post("/api/resume", headers=OPS)).json()["paused"] is False
    await sweep(runtime, "w1", grace=timedelta(0))
    await process_all(runtime)
    assert (await events(runtime))[0].status == "done"
    actions = [a["action"] for a in (await client.get("/api/audit", headers=OPS)).json()["items"]]
    assert actions == ["resume", "pause"]


async def test_unlink_and_relink_user_and_course(client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any) -> None:
    await post_contact(client, "d-1")
    await process_all(runtime)
    uid = moodle_user(moodle_fake, "jane.doe@example.com")["id"]  # type: ignore[index]
    assert (await client.delete(f"/api/links/users/{uid}", headers=OPS)).status_code == 204
    assert (await client.get("/api/links/users", headers=OPS)).json()["total"] == 0
    assert (await client.delete(f"/api/links/users/{uid}", headers=OPS)).status_code == 404
    body = {"contact_id": 1234, "username": "Jane.Doe@example.com", "moodle_user_id": uid}
    r = await client.post("/api/links/users", json=body, headers=OPS)
    assert r.status_code == 201 and r.json()["username"] == "jane.doe@example.com"
    assert (await client.post("/api/links/users", json=body, headers=OPS)).status_code == 409
    r = await client.post("/api/links/courses", json={"course_date_id": 26519, "moodle_course_id": 2}, headers=OPS)
    assert r.status_code == 201 and r.json()["created_by_sync"] is False
    assert (await client.delete("/api/links/courses/26519", headers=OPS)).status_code == 204
    actions = [a["action"] for a in (await client.get("/api/audit", headers=OPS)).json()["items"]]
    assert actions == ["unlink.course", "link.course", "link.user", "unlink.user"]


async def test_metrics(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await post_contact(client, "d-1")
    await post_contact(client, "d-1")
    await process_all(runtime)
    text = (await client.get("/metrics")).text
    assert 'sync_events_received_total{kind="contact.upserted",outcome="duplicate",source="coursesales"}' in text
    assert 'sync_events_finished_total{kind="contact.upserted",status="done"}' in text
    assert 'sync_upstream_calls_total{function="core_user_create_users",upstream="moodle"}' in text
    # The gauge counts the open events and those waiting for a person; finished ones are the counter above.
    assert 'sync_events{status="queued"} 0.0' in text and 'sync_events{status="failed"} 0.0' in text
    assert 'sync_events{status="done"}' not in text and "sync_oldest_unfinished_event_seconds 0.0" in text
    assert "sync_queue_depth" in text and "sync_job_seconds_bucket" in text


async def test_metrics_count_the_open_events_and_those_waiting_for_a_person(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    for i in range(7):
        assert (await post_contact(client, f"g-{i}")).status_code == 202
    ids = [e.id for e in await events(runtime)]
    statuses = ["queued", "queued", "running", "retrying", "failed", "needs_review", "done"]
    async with runtime.sessions() as s:
        for event_id, status in zip(ids, statuses, strict=True):
            await s.execute(update(Event).where(Event.id == event_id).values(status=status))
        await s.execute(update(Event).where(Event.id == ids[2]).values(created_at=utcnow() - timedelta(hours=1)))
        await s.commit()
    text = (await client.get("/metrics")).text
    for status, count in (("accepted", 0), ("queued", 2), ("running", 1), ("retrying", 1), ("failed", 1)):
        assert f'sync_events{{status="{status}"}} {count}.0' in text, status
    assert 'sync_events{status="needs_review"} 1.0' in text and 'sync_events{status="done"}' not in text
    oldest = next(line for line in text.splitlines() if line.startswith("sync_oldest_unfinished_event_seconds "))
    assert 3600 <= float(oldest.split()[1]) < 3700


async def test_retention_purges_payloads(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await post_contact(client, "d-old")
    await post_contact(client, "d-new", contact_id=2, username="bob", email="bob@example.com")
    await process_all(runtime)
    async with runtime.sessions() as s:
        await s.execute(
            update(Event).where(Event.dedupe_key == "d-old").values(updated_at=utcnow() - timedelta(days=91))
        )
        await s.commit()
    await sweep(runtime, "w1")
    by_key = {e.dedupe_key: e for e in await events(runtime)}
    assert by_key["d-old"].payload is None and by_key["d-old"].status == "done"
    assert by_key["d-new"].payload is not None


async def test_body_too_large_is_413(client: httpx.AsyncClient, runtime: Runtime) -> None:
    runtime.settings.api.max_body_bytes = 1000
    big = {"type": "contact.upserted", "id": "d-big", "contact": {"username": "x" * 5000}}
    r = await client.post(
        "/webhooks/coursesales", json=big, headers={"Authorization": f"Bearer {TEST_TOKENS['coursesales']}"}
    )
    assert r.status_code == 413
    assert await events(runtime) == []
