"""The console's overview (/api/overview), its chart (/api/events/per-hour) and the event list's estimated total."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from app.db.models import Attempt, Event, EventStatus, Run, RunStatus, RunTrigger
from app.db.types import utcnow
from app.runtime import Runtime
from app.settings import Settings
from app.sync import overview
from tests.conftest import ON_POSTGRES, TEST_TOKENS, bearer, make_settings, postgres_only

READ_TOKEN = "read-only-token-for-tests"
READ = {"Authorization": f"Bearer {READ_TOKEN}"}
SEEDED = {
    "accepted": 2,
    "queued": 1,
    "running": 1,
    "retrying": 2,
    "failed": 3,
    "needs_review": 1,
    "done": 5,
    "ignored": 1,
}
NOW = datetime(2026, 12, 6, 15, 42, 10, tzinfo=UTC)


@pytest.fixture
def settings(migrated: str, var_dir: Path) -> Settings:
    api = {"token": SecretStr(TEST_TOKENS["api"]), "read_token": SecretStr(READ_TOKEN)}
    return make_settings(migrated, var_dir, api=api)


def _event(n: int, status: str, created_at: datetime | None = None, kind: str = "contact.upserted") -> Event:
    at = created_at or utcnow()
    return Event(source="coursesales", kind=kind, dedupe_key=f"ov-{n}", body_hash="-", subject=f"contact:{n}",
                 status=status, created_at=at, updated_at=at)  # fmt: skip


async def _seed_statuses(rt: Runtime) -> None:
    async with rt.sessions() as s:
        n = 0
        for status, count in SEEDED.items():
            for _ in range(count):
                n += 1
                s.add(_event(n, status))
        await s.commit()


async def _overview(client: httpx.AsyncClient) -> dict:  # type: ignore[type-arg]
    r = await client.get("/api/overview", headers=bearer("api"))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_counts_match_the_rows_in_each_status(runtime: Runtime, client: httpx.AsyncClient) -> None:
    await _seed_statuses(runtime)
    body = await _overview(client)
    assert body["counts"] == {"open": 4, "retrying": 2, "failed": 3, "needs_review": 1}
    assert body["pause"] == {"paused": False, "since": None, "by": None, "note": None}
    assert body["last_run"] is None


async def test_the_oldest_unfinished_event(runtime: Runtime, client: httpx.AsyncClient) -> None:
    now = utcnow()
    async with runtime.sessions() as s:
        s.add(_event(1, EventStatus.done, now - timedelta(days=3)))  # older, but finished
        s.add(_event(2, EventStatus.failed, now - timedelta(days=2)))  # finished, waiting for a person
        oldest = _event(3, EventStatus.retrying, now - timedelta(hours=5), kind="registration.registered")
        s.add(oldest)
        s.add(_event(4, EventStatus.queued, now - timedelta(hours=1)))
        await s.commit()
        oldest_id = oldest.id
    found = (await _overview(client))["oldest_unfinished"]
    assert found["id"] == oldest_id and found["kind"] == "registration.registered"
    assert abs(datetime.fromisoformat(found["created_at"]) - (now - timedelta(hours=5))) < timedelta(seconds=1)
    assert 5 * 3600 - 5 <= found["age_seconds"] <= 5 * 3600 + 60


async def test_no_unfinished_event(runtime: Runtime, client: httpx.AsyncClient) -> None:
    async with runtime.sessions() as s:
        s.add(_event(1, EventStatus.done))
        await s.commit()
    assert (await _overview(client))["oldest_unfinished"] is None


async def test_paused_since_when_by_whom_and_why(runtime: Runtime, client: httpx.AsyncClient) -> None:
    before = utcnow() - timedelta(seconds=1)
    r = await client.post("/api/pause", json={"note": "Moodle upgrade tonight"}, headers=bearer("api"))
    assert r.status_code == 200, r.text
    pause = (await _overview(client))["pause"]
    assert pause["paused"] is True and pause["by"] == "api" and pause["note"] == "Moodle upgrade tonight"
    assert before <= datetime.fromisoformat(pause["since"]) <= utcnow()
    await client.post("/api/resume", headers=bearer("api"))
    assert (await _overview(client))["pause"]["paused"] is False


async def test_the_last_reconcile_run(runtime: Runtime, client: httpx.AsyncClient) -> None:
    async with runtime.sessions() as s:
        s.add(Run(trigger=RunTrigger.cron, status=RunStatus.failed, error="Moodle down"))
        await s.commit()
        last = Run(trigger=RunTrigger.api, dry_run=True, status=RunStatus.done, counts={"plan.enrol": 3},
                   finished_at=utcnow())  # fmt: skip
        s.add(last)
        await s.commit()
        last_id = last.id
    run = (await _overview(client))["last_run"]
    assert run["id"] == last_id and run["dry_run"] is True and run["trigger"] == "api"
    assert run["status"] == "done" and run["counts"] == {"plan.enrol": 3} and run["error"] is None
    assert run["started_at"] and run["finished_at"]


async def _seed_attempts(rt: Runtime) -> None:
    """Attempts placed in given hours before NOW (15:42): this hour, 2 hours ago, 23 hours ago, and outside."""
    hour = NOW.replace(minute=0, second=0, microsecond=0)
    placed = [
        (hour + timedelta(minutes=5), "done"),
        (hour + timedelta(minutes=40), "done"),
        (hour + timedelta(minutes=41), "running"),  # still running: no outcome yet
        (hour - timedelta(hours=2) + timedelta(minutes=59, seconds=59), "retrying"),
        (hour - timedelta(hours=2), "failed"),
        (hour - timedelta(hours=23), "needs_review"),  # the first hour of the 24
        (hour - timedelta(hours=23, seconds=1), "ignored"),  # just before it
        (hour - timedelta(days=6, hours=23), "done"),  # the first hour of the 7 days
        (hour - timedelta(days=8), "done"),  # outside both
    ]
    async with rt.sessions() as s:
        event = _event(1, EventStatus.done)
        s.add(event)
        await s.flush()
        for n, (at, outcome) in enumerate(placed, 1):
            s.add(Attempt(event_id=event.id, number=n, started_at=at, finished_at=at, outcome=outcome))
        await s.commit()


async def test_per_hour_24h_buckets(runtime: Runtime) -> None:
    await _seed_attempts(runtime)
    async with runtime.sessions() as s:
        chart = await overview.per_hour(s, "24h", now=NOW)
    assert chart.window == "24h"
    assert len(chart.hours) == 24
    assert chart.hours[0] == "2026-12-05T16:00:00Z" and chart.hours[-1] == "2026-12-06T15:00:00Z"
    assert all(len(v) == 24 for v in chart.series.values())
    assert list(chart.series) == ["done", "failed", "needs_review", "retrying", "ignored"]
    expected = {"done": {23: 2}, "failed": {21: 1}, "retrying": {21: 1}, "needs_review": {0: 1}, "ignored": {}}
    for outcome, at in expected.items():
        assert chart.series[outcome] == [at.get(i, 0) for i in range(24)], outcome


async def test_per_hour_7d_buckets(runtime: Runtime) -> None:
    await _seed_attempts(runtime)
    async with runtime.sessions() as s:
        chart = await overview.per_hour(s, "7d", now=NOW)
    assert len(chart.hours) == 168 and chart.hours[0] == "2026-11-29T16:00:00Z"
    assert chart.series["done"][0] == 1 and chart.series["done"][-1] == 2 and sum(chart.series["done"]) == 3
    assert sum(chart.series["ignored"]) == 1 and chart.series["ignored"][143] == 1  # 23 h 1 s before 15:00
    with pytest.raises(ValueError, match="window"):
        await overview.per_hour(s, "1h", now=NOW)  # type: ignore[arg-type]


async def test_per_hour_over_http_and_not_taken_for_an_event_id(runtime: Runtime, client: httpx.AsyncClient) -> None:
    await _seed_attempts(runtime)
    for window, hours in (("24h", 24), ("7d", 168)):
        r = await client.get("/api/events/per-hour", params={"window": window}, headers=bearer("api"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["window"] == window and len(body["hours"]) == hours
        assert body["hours"][-1] == utcnow().strftime("%Y-%m-%dT%H:00:00Z")
        assert set(body["series"]) == {"done", "failed", "needs_review", "retrying", "ignored"}
    assert len((await client.get("/api/events/per-hour", headers=bearer("api"))).json()["hours"]) == 24
    r = await client.get("/api/events/per-hour", params={"window": "30d"}, headers=bearer("api"))
    assert r.status_code == 422 and "window" in r.text
    # /api/events/{event_id} still answers for an id
    async with runtime.sessions() as s:
        event_id = (await s.execute(text("SELECT min(id) FROM events"))).scalar_one()
    assert (await client.get(f"/api/events/{event_id}", headers=bearer("api"))).json()["id"] == event_id


async def test_auth(runtime: Runtime, client: httpx.AsyncClient) -> None:
    for path in ("/api/overview", "/api/events/per-hour?window=7d"):
        assert (await client.get(path)).status_code == 401
        assert (await client.get(path, headers={"Authorization": "Bearer wrong-token-123456"})).status_code == 401
        assert (await client.get(path, headers=READ)).status_code == 200, path


async def test_small_lists_count_exactly(runtime: Runtime, client: httpx.AsyncClient) -> None:
    await _seed_statuses(runtime)
    if ON_POSTGRES:
        async with runtime.sessions() as s:
            await s.execute(text("ANALYZE events"))
            await s.commit()
    body = (await client.get("/api/events", params={"limit": 1}, headers=bearer("api"))).json()
    assert body["total"] == sum(SEEDED.values()) and body["estimated"] is False


async def test_the_unfiltered_list_of_a_large_table_is_estimated(
    runtime: Runtime, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    postgres_only("the estimate is PostgreSQL's statistics")
    monkeypatch.setattr(overview, "EXACT_BELOW", 10)  # "large" for this test: 600 events
    async with runtime.sessions() as s:
        await s.execute(
            text(
                "INSERT INTO events (tenant_id, source, kind, dedupe_key, body_hash, status, attempts, created_at, updated_at) "
                "SELECT 0, 'coursesales', 'contact.upserted', 'est-' || n, '-', "
                "CASE WHEN n % 100 = 0 THEN 'failed' ELSE 'done' END, 1, now(), now() "
                "FROM generate_series(1, 600) AS n"
            )
        )
        await s.commit()
    async with runtime.sessions() as s:
        await s.execute(text("ANALYZE events"))
        await s.commit()
    body = (await client.get("/api/events", params={"limit": 5}, headers=bearer("api"))).json()
    assert body["estimated"] is True and 500 <= body["total"] <= 700 and len(body["items"]) == 5
    failed = (await client.get("/api/events", params={"status": "failed"}, headers=bearer("api"))).json()
    assert failed == {**failed, "total": 6, "estimated": False}, "a filtered list is counted exactly"
    by_kind = (await client.get("/api/events", params={"kind": "contact.upserted"}, headers=bearer("api"))).json()
    assert by_kind["total"] == 600 and by_kind["estimated"] is False
    # Once tenants are registered the table's estimate would count theirs: each tenant's total is exact.
    from app.db.tenants import Tenant

    async with runtime.sessions() as s:
        s.add(Tenant(slug="other", name="Other"))
        await s.commit()
    body = (await client.get("/api/events", params={"limit": 5}, headers=bearer("api"))).json()
    assert body["estimated"] is False and body["total"] == 600
