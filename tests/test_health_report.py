"""The console's "is all well?" tiles (app/health_report.py, /api/checks) against the fakes: each check says green or
red with its reason and since when, an upstream that does not answer is red within its timeout while the others are
still reported, and no secret reaches the answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from arq.connections import RedisSettings
from pydantic import SecretStr
from sqlalchemy import update

from app.db.models import UpstreamState
from app.health_report import NAMES, SINCE, Check, run_checks
from app.jobs.queue import Queue, connect
from app.jobs.redis import redis_settings
from app.runtime import Runtime, build_runtime
from app.settings import Settings
from app.sync import upstreams
from tests.conftest import TEST_TOKENS, bearer
from tests.fakes.moodle import USERS_COURSES
from tests.procs import free_port


@pytest.fixture(autouse=True)
def fresh_memory() -> Iterator[None]:
    """The since memory is process-wide: each test starts with none."""
    SINCE.forget()
    yield
    SINCE.forget()


@pytest.fixture
def moodle_fake(moodle_fake: Any) -> Any:
    """The 4.3 fake with every function `moodle-sync check` requires (its default service lacks one)."""
    moodle_fake.add_function(USERS_COURSES)
    return moodle_fake


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


async def tiles(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    r = await client.get("/api/checks", headers=bearer("api"), params=params)
    assert r.status_code == 200, r.text
    return r.json()


def secrets_of(rt: Runtime) -> list[str]:
    """Every credential the service holds, and the fakes' own (the same values, named to be sure)."""
    return [*rt.settings.secret_values(), "test-token", "SOAP_PASSWORD", TEST_TOKENS["api"]]


def assert_no_secret(text: str, rt: Runtime) -> None:
    leaked = [s for s in secrets_of(rt) if s in text]
    assert leaked == [], f"secrets in the answer: {leaked}"


async def test_all_green(client: httpx.AsyncClient, runtime: Runtime) -> None:
    body = await tiles(client)
    assert body["ok"] is True
    assert [c["name"] for c in body["checks"]] == list(NAMES)
    for c in body["checks"]:
        assert set(c) == {"name", "ok", "summary", "details", "since", "checked_at", "seconds"}
        assert c["ok"] is True, c
        assert c["since"] and c["checked_at"] and 0 <= c["seconds"] < 5
        assert "\n" not in c["summary"]
    moodle = body["checks"][2]
    assert moodle["summary"].startswith("Moodle 4.3")
    # A warning of `moodle-sync check` is shown, with its fix, but does not make the tile red.
    assert any(d.startswith("warn:") and "viewfullnames" in d for d in moodle["details"]), moodle
    assert "login works" in body["checks"][3]["summary"]
    assert_no_secret(str(body), runtime)


async def test_moodle_in_maintenance_is_red_with_the_fix(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    moodle_fake.maintenance(True)
    body = await tiles(client)
    assert body["ok"] is False
    moodle = body["checks"][2]
    assert moodle["ok"] is False and "503" in moodle["summary"] and "maintenance" in moodle["summary"]
    assert any("work resumes by itself" in d for d in moodle["details"]), moodle
    assert [c["ok"] for c in body["checks"] if c["name"] != "moodle"] == [True, True, True]
    assert_no_secret(str(body), runtime)


async def test_a_missing_function_is_named_with_its_fix(runtime: Runtime, moodle_fake: Any) -> None:
    moodle_fake.remove_function("core_user_create_users")
    moodle = by_name(await run_checks(runtime))["moodle"]
    assert moodle.ok is False
    assert moodle.summary == "add these functions to the token's external service: core_user_create_users"
    assert any("error: add these functions" in d for d in moodle.details)


async def test_a_refused_coursesales_login(client: httpx.AsyncClient, runtime: Runtime, coursesales_fake: Any) -> None:
    coursesales_fake.password = "changed-by-someone"
    r = await client.get("/api/checks/coursesales", headers=bearer("api"))
    assert r.status_code == 200
    tile = r.json()
    assert tile["name"] == "coursesales" and tile["ok"] is False
    assert "refused the login" in tile["summary"]
    assert any("SYNC_COURSESALES__USERNAME" in d for d in tile["details"]), tile
    assert_no_secret(r.text, runtime)


class Silent(httpx.AsyncBaseTransport):
    """A Moodle that takes the request and never answers."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(60)
        raise AssertionError("the check should have given up long before")


@pytest.fixture
async def silent_moodle(settings: Settings, coursesales_fake: Any, clean_db: None) -> AsyncIterator[Runtime]:
    rt = build_runtime(
        settings, moodle_transport=Silent(), coursesales_transport=httpx.ASGITransport(app=coursesales_fake)
    )
    rt.queue = Queue(connect(redis_settings(settings)))
    yield rt
    await rt.close()


async def test_moodle_not_answering_is_red_and_the_others_still_reported(silent_moodle: Runtime) -> None:
    started = time.monotonic()
    checks = by_name(await run_checks(silent_moodle, timeout=0.5))
    took = time.monotonic() - started
    assert checks["moodle"].ok is False
    assert checks["moodle"].summary == "Moodle did not answer within 0.5 s"
    assert 0.5 <= checks["moodle"].seconds < 2
    assert [checks[n].ok for n in ("database", "redis", "coursesales")] == [True, True, True]
    assert took < 2, "the checks run concurrently, each bounded"


async def test_redis_down_is_red(client: httpx.AsyncClient, runtime: Runtime) -> None:
    working = runtime.queue
    runtime.queue = Queue(connect(RedisSettings(host="127.0.0.1", port=free_port(), conn_timeout=1)))
    try:
        r = await client.get("/api/checks/redis", headers=bearer("api"))
        body = await tiles(client)
    finally:
        assert runtime.queue is not None
        await runtime.queue.close()
        runtime.queue = working
    assert r.status_code == 200
    assert r.json()["ok"] is False and r.json()["summary"] == "Redis does not answer"
    assert any("SYNC_REDIS_URL" in d for d in r.json()["details"])
    assert body["ok"] is False
    assert [c["ok"] for c in body["checks"]] == [True, False, True, True]


async def test_since_is_kept_while_the_state_stays_and_reset_when_it_changes(
    runtime: Runtime, moodle_fake: Any
) -> None:
    first = by_name(await run_checks(runtime))
    second = by_name(await run_checks(runtime))
    for name in NAMES:
        assert second[name].ok is True
        assert second[name].since == first[name].since, name
        assert second[name].checked_at > first[name].checked_at
    moodle_fake.maintenance(True)
    red = by_name(await run_checks(runtime))
    assert red["moodle"].ok is False and red["moodle"].since > second["moodle"].since
    assert red["database"].since == first["database"].since, "another tile's state did not change"
    again = by_name(await run_checks(runtime))
    assert again["moodle"].since == red["moodle"].since
    moodle_fake.maintenance(False)
    back = by_name(await run_checks(runtime))
    assert back["moodle"].ok is True and back["moodle"].since > red["moodle"].since


async def test_since_of_a_fault_the_probe_recorded_is_the_shared_one(runtime: Runtime, moodle_fake: Any) -> None:
    """Where the upstream states table records the fault, its since is every process's: older than this one's."""
    moodle_fake.maintenance(True)
    async with runtime.sessions() as s:
        fault = upstreams.Fault(upstreams.MOODLE, upstreams.UNAVAILABLE, "Moodle is in maintenance: HTTP 503")
        await upstreams.mark(s, fault)
        await s.commit()
    recorded = upstreams.utcnow() - timedelta(hours=2)
    async with runtime.sessions() as s:
        await s.execute(update(UpstreamState).where(UpstreamState.name == "moodle").values(since=recorded))
        await s.commit()
    moodle = by_name(await run_checks(runtime))["moodle"]
    assert moodle.ok is False and moodle.since == recorded
    assert any("holds the work bound for Moodle (unavailable)" in d for d in moodle.details), moodle.details
    # Once Moodle answers (the probe has not noticed yet), the tile is green since now, not since two hours.
    moodle_fake.maintenance(False)
    green = by_name(await run_checks(runtime))["moodle"]
    assert green.ok is True and green.since > recorded + timedelta(hours=1)


async def test_not_configured_is_neither_green_nor_red(client: httpx.AsyncClient, runtime: Runtime) -> None:
    runtime.settings.moodle.token = SecretStr("")
    runtime.settings.coursesales.url = ""
    body = await tiles(client)
    moodle, coursesales = body["checks"][2], body["checks"][3]
    assert moodle["ok"] is None and moodle["summary"] == "not configured: set SYNC_MOODLE__URL and SYNC_MOODLE__TOKEN"
    assert coursesales["ok"] is None and "SYNC_COURSESALES__URL" in coursesales["summary"]
    assert body["ok"] is True, "a check not configured is not red"


async def test_no_secret_in_any_failing_answer(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, coursesales_fake: Any
) -> None:
    moodle_fake.suspend_token_user(True)
    coursesales_fake.password = "changed-by-someone"
    r = await client.get("/api/checks", headers=bearer("api"))
    assert r.json()["ok"] is False
    assert "wsaccessusersuspended" in r.json()["checks"][2]["summary"]
    assert_no_secret(r.text, runtime)
    moodle_fake.suspend_token_user(False)
    moodle_fake.token = "a-token-issued-since-0123"  # ours is now refused
    r = await client.get("/api/checks/moodle", headers=bearer("api"))
    assert r.json()["ok"] is False and "invalidtoken" in r.json()["summary"]
    assert_no_secret(r.text, runtime)


async def test_an_upstream_message_carrying_a_secret_is_scrubbed(runtime: Runtime, moodle_fake: Any) -> None:
    """Defence in depth: even an upstream that echoes our token back is shown without it."""
    moodle_fake.site_url = "http://moodle.test/?wstoken=test-token"
    moodle = by_name(await run_checks(runtime))["moodle"]
    assert "?wstoken=***" in moodle.summary and "test-token" not in moodle.summary


async def test_the_ops_token_is_required(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/checks")).status_code == 401
    assert (await client.get("/api/checks/moodle")).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert (await client.get("/api/checks", headers=wrong)).status_code == 401


async def test_an_unknown_check_or_timeout_is_a_422_naming_it(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/checks/mail", headers=bearer("api"))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "name"]
    r = await client.get("/api/checks", headers=bearer("api"), params={"timeout": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "timeout"]


async def test_run_checks_refuses_an_unknown_name(runtime: Runtime) -> None:
    with pytest.raises(ValueError, match="unknown check 'mail'"):
        await run_checks(runtime, names=("mail",))
