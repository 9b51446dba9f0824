"""SYNC_API__READ_TOKEN: a second ops bearer token that reads every GET of /api/ and changes nothing (403), while
SYNC_API__TOKEN still does everything and any other token stays a 401."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from app.api.deps import token_access
from app.runtime import Runtime
from app.settings import Settings
from tests.conftest import TEST_TOKENS, bearer, make_settings
from tests.helpers import events, post_contact, process_all

READ_TOKEN = "read-only-token-for-tests"
READ = {"Authorization": f"Bearer {READ_TOKEN}"}
WRONG = {"Authorization": "Bearer not-the-token-at-all-0123"}


@pytest.fixture
def settings(migrated: str, var_dir: Path) -> Settings:
    """The suite's settings with a read-only token beside the full one."""
    api = {"token": SecretStr(TEST_TOKENS["api"]), "read_token": SecretStr(READ_TOKEN)}
    return make_settings(migrated, var_dir, api=api)


async def _failed_event(client: httpx.AsyncClient, runtime: Runtime) -> int:
    await post_contact(client, "d-1", password=None)  # no password for a new Moodle user: failed
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "failed"
    return event.id


async def test_the_read_token_reads(client: httpx.AsyncClient, runtime: Runtime) -> None:
    event_id = await _failed_event(client, runtime)
    for path in ("/api/events", f"/api/events/{event_id}", "/api/upstreams", "/api/pause", "/api/audit", "/api/runs"):
        r = await client.get(path, headers=READ)
        assert r.status_code == 200, (path, r.text)
    assert (await client.get("/api/events", headers=READ)).json()["total"] == 1


async def test_the_read_token_changes_nothing(client: httpx.AsyncClient, runtime: Runtime) -> None:
    event_id = await _failed_event(client, runtime)
    writes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/api/pause", None),
        ("POST", "/api/resume", None),
        ("POST", "/api/events/replay", {"status": "failed"}),
        ("POST", f"/api/events/{event_id}/replay", None),
        ("POST", f"/api/events/{event_id}/resolve", {"note": "checked"}),
        ("PUT", "/api/contacts/contact:7/do-not-sync", {"note": "erasure"}),
        ("DELETE", "/api/contacts/contact:7/do-not-sync", None),
    ]
    for method, path, body in writes:
        r = await client.request(method, path, json=body, headers=READ)
        assert r.status_code == 403, (method, path, r.text)
        assert "SYNC_API__READ_TOKEN" in r.json()["detail"] and "SYNC_API__TOKEN" in r.json()["detail"]
    assert (await client.get("/api/pause", headers=READ)).json()["paused"] is False
    assert (await events(runtime))[0].status == "failed"
    assert (await client.get("/api/audit", headers=READ)).json()["total"] == 0


async def test_the_full_token_still_does_everything(client: httpx.AsyncClient, runtime: Runtime) -> None:
    event_id = await _failed_event(client, runtime)
    assert (await client.get("/api/events", headers=bearer("api"))).status_code == 200
    assert (await client.post("/api/pause", headers=bearer("api"))).json()["paused"] is True
    assert (await client.post("/api/resume", headers=bearer("api"))).json()["paused"] is False
    replayed = await client.post("/api/events/replay", json={"status": "failed"}, headers=bearer("api"))
    assert replayed.status_code == 200 and replayed.json()["replayed"] == [event_id]


async def test_a_wrong_token_is_401_whatever_the_method(client: httpx.AsyncClient, runtime: Runtime) -> None:
    for headers in (WRONG, bearer("coursesales"), {}):
        assert (await client.get("/api/events", headers=headers)).status_code == 401
        r = await client.post("/api/pause", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


async def test_the_read_token_reads_metrics_behind_the_token(client: httpx.AsyncClient, runtime: Runtime) -> None:
    runtime.settings.metrics.access = "token"
    assert (await client.get("/metrics", headers=WRONG)).status_code == 401
    assert (await client.get("/metrics", headers=READ)).status_code == 200


def test_an_unset_read_token_matches_nothing(migrated: str, var_dir: Path) -> None:
    plain = make_settings(migrated, var_dir)
    assert token_access(READ_TOKEN, plain) is None
    assert token_access(TEST_TOKENS["api"], plain) == "full"
    both = make_settings(migrated, var_dir, api={"token": SecretStr(TEST_TOKENS["api"]), "read_token": SecretStr("")})
    assert token_access("", both) is None


def test_the_read_token_is_checked_as_the_other_credentials(migrated: str, var_dir: Path) -> None:
    def problems(read_token: str, mode: str = "test") -> list[str]:
        api = {"token": SecretStr(TEST_TOKENS["api"]), "read_token": SecretStr(read_token)}
        return [p for p in make_settings(migrated, var_dir, api=api, mode=mode).problems() if "READ_TOKEN" in p]

    assert problems(READ_TOKEN) == []
    assert problems("short") == ["SYNC_API__READ_TOKEN is shorter than 16 characters"]
    assert problems(TEST_TOKENS["api"]) == [
        "SYNC_API__READ_TOKEN holds the same value as SYNC_API__TOKEN: give each credential its own"
    ]
    assert problems("changeme", mode="production") == [
        "SYNC_API__READ_TOKEN is set to an empty or placeholder value; unset it to switch that method off"
    ]
    masked = make_settings(migrated, var_dir, api={"token": SecretStr(TEST_TOKENS["api"]), "read_token": READ_TOKEN})
    assert READ_TOKEN in masked.secret_values()  # the logs mask it wherever it appears
