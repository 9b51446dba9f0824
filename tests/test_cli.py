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
