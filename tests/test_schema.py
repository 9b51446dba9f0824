"""The service refuses a database that is not migrated to this version: one clear line from the commands, a 503
from /readyz, never a service answering webhooks with 500s ("no such table: events")."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
from alembic.config import Config
from alembic.script import ScriptDirectory

from app.cli import run_migrations
from app.db.engine import make_engine
from app.db.schema import HEAD, schema_problem
from app.runtime import Runtime
from tests.procs import ROOT, moodle_sync_command, worker_env


def _problem(url: str) -> str | None:
    async def check() -> str | None:
        engine = make_engine(url)
        try:
            return await schema_problem(engine)
        finally:
            await engine.dispose()

    return asyncio.run(check())


def test_head_is_the_newest_migration() -> None:
    assert ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_heads() == [HEAD]


def test_a_database_is_checked_against_this_versions_schema(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}"
    assert _problem(url) == "the database has no schema yet: run `moodle-sync migrate`"
    run_migrations(url, "20261205_0008")
    assert _problem(url) == (
        f"the database schema is at 20261205_0008, this version needs {HEAD}: run `moodle-sync migrate`"
    )
    run_migrations(url, "head")
    assert _problem(url) is None


def test_commands_refuse_a_database_not_migrated(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}"
    env = worker_env(database_url=url, redis_url="redis://127.0.0.1:1/0", moodle_url="", var_dir=tmp_path)
    for command in (["events"], ["pause"], ["worker"], ["serve", "--port", "1"]):
        done = subprocess.run(  # noqa: S603 (our own CLI)
            [*moodle_sync_command(), *command], env=env, capture_output=True, text=True, timeout=60
        )
        said = " ".join((done.stdout + done.stderr).split())
        assert done.returncode == 2, (command, said)
        assert "database error: the database has no schema yet: run `moodle-sync migrate`" in said, said
        assert "Traceback" not in said


async def test_readyz_is_not_ready_on_a_database_not_migrated(
    client: httpx.AsyncClient, runtime: Runtime, tmp_path: Path
) -> None:
    empty = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    real, runtime.engine = runtime.engine, empty
    try:
        r = await client.get("/readyz")
    finally:
        runtime.engine = real
        await empty.dispose()
    assert r.status_code == 503
    assert r.json()["checks"]["database"] == {
        "ok": False,
        "error": "the database has no schema yet: run `moodle-sync migrate`",
    }


async def test_readyz_is_not_ready_while_the_database_does_not_answer(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    down = make_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    real, runtime.engine = runtime.engine, down
    try:
        r = await client.get("/readyz")
    finally:
        runtime.engine = real
        await down.dispose()
    assert r.status_code == 503 and r.json()["checks"]["database"]["ok"] is False
    assert r.json()["checks"]["database"]["error"]  # the exception's type: no address, no credential


def test_the_service_starts_while_the_database_does_not_answer(tmp_path: Path) -> None:
    """Only a database that answers without this version's schema is refused: one that is down (a restart of both
    at once) lets the API start, and /readyz says not ready until it answers."""
    import time

    from tests.procs import free_port

    env = worker_env(
        database_url="postgresql+asyncpg://postgres@127.0.0.1:1/none",
        redis_url="redis://127.0.0.1:1/0",
        moodle_url="",
        var_dir=tmp_path,
    )
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603 (our own CLI)
        [*moodle_sync_command(), "api", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[0].decode()[-2000:]
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the API did not start"
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(30)
    assert ready.status_code == 503 and ready.json()["checks"]["database"]["ok"] is False
