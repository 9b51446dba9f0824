"""The operator CLI against the real database: events, replay, resolve, pause, resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from app.runtime import Runtime
from tests.helpers import events, post_contact, process_all

ROOT = Path(__file__).resolve().parent.parent


def cli(runtime: Runtime, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SYNC_MODE": "test",
        "SYNC_DATABASE_URL": runtime.settings.effective_database_url,
        "SYNC_CONFIG": str(ROOT / "no-such-config.toml"),
        "COLUMNS": "200",
    }
    return subprocess.run(  # noqa: S603 (our own CLI, fixed arguments)
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


async def test_cli_operator_commands(client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any) -> None:
    await post_contact(client, "d-1", password=None)
    await process_all(runtime)
    (event,) = await events(runtime)
    listed = cli(runtime, "events", "--status", "failed")
    assert listed.returncode == 0 and "contact.upserted" in listed.stdout
    assert cli(runtime, "resolve", str(event.id)).returncode != 0, "a note is required"
    done = cli(runtime, "resolve", str(event.id), "--note", "no portal login")
    assert done.returncode == 0, done.stderr
    assert (await events(runtime))[0].status == "done"
    refused = cli(runtime, "resolve", str(event.id), "--note", "again")
    assert refused.returncode == 1 and "only needs_review and failed" in refused.stderr
    assert cli(runtime, "replay", str(event.id), "--note", "try again").returncode == 0
    assert (await events(runtime))[0].status == "accepted"
    assert cli(runtime, "pause", "--note", "upgrade").returncode == 0
    assert cli(runtime, "resume").returncode == 0


def test_cli_validation_is_one_clear_line(runtime: Runtime, tmp_path: Path) -> None:
    """Filters are validated as the API validates them; a bad setting is one line naming its variable; the
    production refusal says how to try the service out; migrate names the database it migrated."""
    bogus = cli(runtime, "events", "--status", "bogus")
    assert bogus.returncode == 2 and "bogus" in bogus.stderr and "Traceback" not in bogus.stderr
    assert cli(runtime, "events", "--limit", "0").returncode == 2

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
        base.update(SYNC_CONFIG=str(tmp_path / "none.toml"), SYNC_VAR_DIR=str(tmp_path / "var"), COLUMNS="80", **env)
        return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=base,  # noqa: S603
                              cwd=tmp_path, timeout=60, check=False)  # fmt: skip

    empty_mode = run("events", SYNC_MODE="")
    assert empty_mode.returncode == 2 and "Traceback" not in empty_mode.stderr
    assert [line for line in empty_mode.stderr.splitlines() if line.strip()] == [
        "configuration error: SYNC_MODE: Input should be 'production', 'dev' or 'test'"
    ]
    production = run("events")
    assert production.returncode == 2 and "SYNC_SECRET_KEY is required" in production.stderr
    assert "SYNC_MODE=dev" in production.stderr and str(tmp_path / "var") in production.stderr
    # Not wrapped at the 80 columns of a captured terminal: each message whole on its line.
    assert "configuration error: SYNC_SECRET_KEY is required outside dev mode (it is empty or a placeholder)" in (
        production.stderr.splitlines()
    )
    migrated = run("migrate", SYNC_MODE="dev")
    assert migrated.returncode == 0 and str(tmp_path / "var" / "sync.db") in migrated.stderr.replace("\n", "")
    assert "alembic" not in migrated.stderr + migrated.stdout, "one log format: Alembic's own lines are quiet"
