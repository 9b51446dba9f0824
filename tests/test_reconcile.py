"""The reconcile: plans what differs, repairs drift, writes nothing the second time, guards against an empty source."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.jobs import reconcile as jobs
from app.runtime import Runtime
from tests.conftest import bearer
from tests.helpers import events, moodle_user, register, settle

WRITES = {
    "core_user_create_users",
    "core_user_update_users",
    "core_course_create_courses",
    "core_course_update_courses",
    "core_course_duplicate_course",
    "enrol_manual_enrol_users",
    "enrol_manual_unenrol_users",
}


def writes(fake: Any) -> list[str]:
    return [f for f, _ in fake.calls if f in WRITES]


RUNNING = 9300  # a course date that runs today: its enrolments must be active


async def reconcile(rt: Runtime, *, dry_run: bool) -> Any:
    run = await jobs.create_run(rt, dry_run=dry_run, trigger="api")
    return await jobs.execute(rt, run.id)


async def test_dry_run_plans_and_writes_nothing(runtime: Runtime, moodle_fake: Any, catalogue: Any) -> None:
    run = await reconcile(runtime, dry_run=True)
    assert run.status == "done"
    actions = sorted((p["action"], p.get("course_date_id")) for p in run.plan)
    # 26519 is the guide's own example: its category (4401) is not in the category list.
    assert actions == [("course.create", 9000 + n) for n in range(5)] + [("report", 9100), ("report", 26519)]
    assert "'Forklift'" in next(p["reason"] for p in run.plan if p.get("course_date_id") == 9100)
    assert writes(moodle_fake) == []
    assert await events(runtime) == [], "a dry run queues nothing"


async def test_reconcile_twice_second_makes_no_writes(runtime: Runtime, moodle_fake: Any, catalogue: Any) -> None:
    first = await reconcile(runtime, dry_run=False)
    assert first.status == "done" and first.counts["course_dates_seen"] == 8
    await settle(runtime)
    assert len([c for c in moodle_fake.courses.values() if str(c.get("idnumber", "")).startswith("90")]) == 5
    before = len(writes(moodle_fake))
    second = await reconcile(runtime, dry_run=False)
    assert second.status == "done"
    await settle(runtime)
    assert [p for p in second.plan if p["action"] != "report"] == []
    assert len(writes(moodle_fake)) == before, "nothing differs: zero Moodle writes"


async def test_drift_in_moodle_is_repaired(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    today = datetime.now(UTC).date()
    catalogue.add_course_date(RUNNING, today - timedelta(days=10), today + timedelta(days=30), 500)
    for n, name in enumerate(["ann", "bob", "cat"], start=1):
        await register(client, f"d-{n}", f"D-{n}", RUNNING, contact_id=n, username=name, email=f"{name}@example.com")
    await settle(runtime)
    course = next(c for c in moodle_fake.courses.values() if str(c.get("idnumber")) == str(RUNNING))
    ann, bob, cat = (moodle_user(moodle_fake, n) for n in ("ann", "bob", "cat"))
    del moodle_fake.enrolments[(ann["id"], course["id"])]  # removed by hand  # type: ignore[index]
    moodle_fake.enrolments[(bob["id"], course["id"])]["status"] = 1  # suspended by hand  # type: ignore[index]
    moodle_fake.delete_user(cat["id"])  # type: ignore[index]
    dry = await reconcile(runtime, dry_run=True)
    planned = sorted((p["action"], p.get("username")) for p in dry.plan if p["action"] in ("enrol", "user.recreate"))
    assert planned == [("enrol", "ann"), ("enrol", "bob"), ("enrol", "cat"), ("user.recreate", "cat")]
    run = await reconcile(runtime, dry_run=False)
    assert [p for p in run.plan if p["action"] == "error"] == []
    assert run.status == "done" and run.counts["enrolments_repaired"] == 3 and run.counts["users_recreated"] == 1
    new_cat = moodle_user(moodle_fake, "cat")
    assert new_cat is not None and new_cat["id"] != cat["id"]  # type: ignore[index]
    recreate = [p for f, p in moodle_fake.calls if f == "core_user_create_users"][-1]
    assert recreate["users"][0]["createpassword"] in ("1", 1) and "password" not in recreate["users"][0]
    for user in (ann, bob, new_cat):
        assert moodle_fake.enrolments[(user["id"], course["id"])]["status"] == 0  # type: ignore[index]
    again = await reconcile(runtime, dry_run=False)
    assert [p for p in again.plan if p["action"] in ("enrol", "user.recreate")] == []


async def test_empty_source_stops_and_changes_nothing(runtime: Runtime, moodle_fake: Any, catalogue: Any) -> None:
    await reconcile(runtime, dry_run=False)
    await settle(runtime)
    catalogue.course_dates.clear()
    before = len(writes(moodle_fake))
    run = await reconcile(runtime, dry_run=False)
    assert run.status == "stopped" and "no course dates" in run.error
    assert len(writes(moodle_fake)) == before


async def test_one_reconcile_at_a_time(runtime: Runtime, catalogue: Any) -> None:
    from app.db import leases

    async with runtime.sessions() as s:
        assert await leases.acquire(s, "reconcile", "someone-else", 60)
        await s.commit()
    run = await reconcile(runtime, dry_run=True)
    assert run.status == "stopped" and "another reconcile" in run.error


async def test_api_reconcile_and_runs(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    r = await client.post("/api/reconcile", json={"dry_run": True}, headers=bearer("api"))
    assert r.status_code == 202 and r.json()["status"] == "queued" and r.json()["dry_run"] is True
    run_id = r.json()["id"]
    from arq.jobs import Job

    from app.jobs.queue import DEFAULT_QUEUE

    job = Job(f"reconcile:{run_id}", runtime.queue.redis, _queue_name=DEFAULT_QUEUE)
    assert (await job.status()).value == "queued"
    await jobs.execute(runtime, run_id)  # what the worker's reconcile_job does
    detail = (await client.get(f"/api/runs/{run_id}", headers=bearer("api"))).json()
    assert detail["status"] == "done" and len(detail["plan"]) == 7 and detail["progress"]["phase"] == "done"
    assert (await client.get("/api/runs", headers=bearer("api"))).json()["total"] == 1
    assert (await client.get("/api/runs/999", headers=bearer("api"))).status_code == 404
    assert (await client.post("/api/reconcile", json={"dry_run": "maybe"}, headers=bearer("api"))).status_code == 422
    assert (await client.post("/api/reconcile", json={})).status_code == 401
    assert writes(moodle_fake) == []


async def test_reconcile_refused_until_configured_and_upstream_failure_recorded(
    client: httpx.AsyncClient, runtime: Runtime, coursesales_fake: Any
) -> None:
    runtime.settings.coursesales.url = ""
    r = await client.post("/api/reconcile", json={"dry_run": True}, headers=bearer("api"))
    assert r.status_code == 409 and "CourseSales not configured" in r.text
    runtime.settings.coursesales.url = "http://coursesales.test"
    coursesales_fake.password = "changed"  # CourseSales refuses our login
    run = await reconcile(runtime, dry_run=True)
    assert run.status == "failed" and "SOAP_PASSWORD" not in run.error and run.error
