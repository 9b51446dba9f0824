"""Metrics from every process: a worker's series at the API's /metrics on one host, `api --workers N` summed, totals
kept across restarts; label values from a fixed set."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx

from app.runtime import Runtime
from tests.conftest import TEST_TOKENS
from tests.helpers import post_contact, wait_for
from tests.procs import RedisServer, ServedApp, WorkerProcess, free_port, moodle_sync_command, worker_env

MOODLE = {"Authorization": f"Bearer {TEST_TOKENS['moodle']}"}


def series(text: str) -> set[str]:
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def value(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


async def test_invented_event_names_leave_the_series_unchanged(client: httpx.AsyncClient) -> None:
    def batch(start: int) -> list[dict[str, Any]]:
        return [
            {"eventname": f"\\local_x\\event\\invented_{n}", "timecreated": 1795608984}
            for n in range(start, start + 300)
        ]

    first = await client.post("/webhooks/moodle", json=batch(0), headers=MOODLE)
    assert first.status_code == 200 and first.json()["ignored"] == 300
    before = (await client.get("/metrics")).text
    second = await client.post("/webhooks/moodle", json=batch(300), headers=MOODLE)
    assert second.status_code == 200 and second.json()["ignored"] == 300
    after = (await client.get("/metrics")).text
    assert series(after) == series(before)
    assert "invented" not in after
    ignored = {"kind": "moodle.ignored", "outcome": "ignored"}
    assert (
        value(after, "sync_events_received_total", **ignored) - value(before, "sync_events_received_total", **ignored)
        == 300
    )


async def _scrape(url: str) -> str:
    async with httpx.AsyncClient(timeout=5) as http:
        return (await http.get(url)).text


async def _up(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


async def test_split_deployment_shows_the_workers_series_at_the_api(
    migrated: str, tmp_path: Path, own_redis: RedisServer, served_moodle: ServedApp, moodle_fake: Any, runtime: Runtime
) -> None:
    """`moodle-sync api` + `moodle-sync worker` on one host: the worker's job and outcome series reach the API's
    /metrics, survive the worker's restart (folded, not reset), and its own port serves them too."""
    var = tmp_path / "var"
    worker_port, api_port = free_port(), free_port()
    env = worker_env(database_url=migrated, redis_url=own_redis.url, moodle_url=served_moodle.url, var_dir=var)
    log = open(tmp_path / "api.log", "wb")
    api = subprocess.Popen([*moodle_sync_command(), "api", "--port", str(api_port)], env=env, stdout=log, stderr=log)  # noqa: S603
    worker = WorkerProcess({**env, "SYNC_METRICS__WORKER_PORT": str(worker_port)}, tmp_path / "worker.log").start()
    base = f"http://127.0.0.1:{api_port}"
    try:
        await wait_for(lambda: _up(f"{base}/healthz"), timeout=60)
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            assert (await post_contact(client, "split-1", contact_id=1)).status_code == 202

        async def finished() -> bool:
            text = await _scrape(f"{base}/metrics")
            return value(text, "sync_events_finished_total", kind="contact.upserted", status="done") == 1

        await wait_for(finished, timeout=30)
        text = await _scrape(f"{base}/metrics")
        assert value(text, "sync_job_seconds_count", kind="contact.upserted") >= 1
        assert value(text, "sync_upstream_calls_total", upstream="moodle", function="core_user_create_users") == 1
        assert value(text, "sync_events_received_total", source="coursesales", outcome="accepted") == 1
        own = await _scrape(f"http://127.0.0.1:{worker_port}/metrics")
        assert value(own, "sync_events_finished_total", kind="contact.upserted", status="done") == 1

        assert worker.terminate() == 0
        worker = WorkerProcess(env, tmp_path / "worker2.log").start()
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            assert (await post_contact(client, "split-2", contact_id=2, username="second@example.com",
                                       email="second@example.com")).status_code == 202  # fmt: skip

        async def both() -> bool:
            text = await _scrape(f"{base}/metrics")
            return value(text, "sync_events_finished_total", kind="contact.upserted", status="done") == 2

        await wait_for(both, timeout=30)
        assert (var / "metrics" / "counter_archive.db").exists(), "the first worker's files were folded"
    finally:
        worker.close()
        api.terminate()
        await asyncio.to_thread(api.wait, 30)
        log.close()


async def test_api_processes_sum_their_counters(
    migrated: str, tmp_path: Path, own_redis: RedisServer, runtime: Runtime
) -> None:
    """`moodle-sync api --workers 2`: whichever process answers the scrape, it counts every delivery."""
    port = free_port()
    env = worker_env(database_url=migrated, redis_url=own_redis.url, moodle_url="", var_dir=tmp_path / "var")
    log = open(tmp_path / "api.log", "wb")
    proc = subprocess.Popen(  # noqa: S603 (our own CLI)
        [*moodle_sync_command(), "api", "--port", str(port), "--workers", "2"], env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_for(lambda: _up(f"{base}/healthz"), timeout=60)
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            answers = await asyncio.gather(*(post_contact(client, f"sum-{i}", contact_id=i + 1) for i in range(20)))
            assert [a.status_code for a in answers] == [202] * 20
            scrapes = [(await client.get("/metrics")).text for _ in range(6)]
        for text in scrapes:
            assert value(text, "sync_events_received_total", source="coursesales", outcome="accepted") == 20
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)
        log.close()
