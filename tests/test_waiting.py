"""A waiting event says why, where the operator looks; a reconcile refuses an unconfigured setup everywhere."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr

from app.jobs.tasks import run_event
from app.runtime import Runtime
from app.sync.readiness import COURSESALES_MISSING, MOODLE_MISSING
from tests.conftest import bearer
from tests.helpers import events, post_contact, post_event
from tests.test_cli import cli


async def test_an_event_waiting_for_moodle_says_so_then_runs_once_configured(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    moodle = runtime.settings.moodle
    runtime.settings.moodle = moodle.model_copy(update={"url": "", "token": SecretStr("")})
    event_id = (await post_contact(client, "w-1")).json()["event_id"]
    assert (await run_event(runtime, event_id)).startswith("waiting")
    assert (await run_event(runtime, event_id)).startswith("waiting"), "asked again by the sweeper"
    detail = (await client.get(f"/api/events/{event_id}", headers=bearer("api"))).json()
    assert detail["status"] == "queued" and detail["waiting_for"] == MOODLE_MISSING
    assert "SYNC_MOODLE__URL" in detail["waiting_for"] and detail["attempts"] == 0
    listed = (await client.get("/api/events", headers=bearer("api"))).json()["items"]
    assert [e["waiting_for"] for e in listed] == [MOODLE_MISSING]
    runtime.settings.moodle = moodle  # configured (the service restarted with it)
    await run_event(runtime, event_id)
    (event,) = await events(runtime)
    assert event.status == "done" and event.waiting_for is None


async def test_only_the_kinds_that_need_coursesales_wait_for_it(client: httpx.AsyncClient, runtime: Runtime) -> None:
    runtime.settings.coursesales = runtime.settings.coursesales.model_copy(update={"url": ""})
    contact = (await post_contact(client, "w-2")).json()["event_id"]
    changed = await post_event(client, {"type": "course_date.changed", "id": "w-3", "course_date_id": 9000})
    assert changed.status_code == 202, changed.text
    await run_event(runtime, contact)
    assert (await run_event(runtime, changed.json()["event_id"])).startswith("waiting")
    by_id = {e.id: e for e in await events(runtime)}
    assert by_id[contact].status == "done" and by_id[contact].waiting_for is None
    assert by_id[changed.json()["event_id"]].waiting_for == COURSESALES_MISSING


async def test_the_cli_reconcile_refuses_an_unconfigured_setup_as_the_api_does(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    runtime.settings.coursesales = runtime.settings.coursesales.model_copy(update={"url": ""})
    api = await client.post("/api/reconcile", json={"dry_run": True}, headers=bearer("api"))
    assert api.status_code == 409 and "CourseSales not configured" in api.json()["detail"]
    done = cli(runtime, "reconcile", "--dry-run")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Moodle and CourseSales not configured yet" in done.stderr and "Traceback" not in done.stderr
    assert "ConnectError" not in done.stdout + done.stderr
