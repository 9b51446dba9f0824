"""Installs anywhere: the wheel carries its migrations, and `moodle-sync migrate` works from an empty folder."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT_DIR


def test_the_package_list_is_every_package_of_app() -> None:
    """pyproject.toml lists the packages (it maps app.migrations onto migrations/): a new one must be added there."""
    listed = set(tomllib.loads((ROOT_DIR / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT_DIR).parts) for init in (ROOT_DIR / "app").rglob("__init__.py")} | {
        "app.migrations",
        "app.migrations.versions",
    }
    assert listed == found


# Building the wheel may fetch the build backend (setuptools) into pip's isolated build environment first.
@pytest.mark.timeout(600)
def test_migrate_from_an_installed_wheel_in_an_empty_folder(tmp_path: Path) -> None:
    wheels, site, empty = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    empty.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(ROOT_DIR)], check=True, timeout=600)  # noqa: S603
    (wheel,) = wheels.glob("*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300)  # noqa: S603
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    # The installed copy, not the source tree (the test venv's own install of this project is an editable one).
    env.update(PYTHONPATH=str(site), SYNC_MODE="dev", SYNC_VAR_DIR=str(empty / "var"))
    run = subprocess.run(
        [sys.executable, "-c", "import app, sys; print(app.__file__, file=sys.stderr); from app.cli import main; main()",
         "migrate"],
        cwd=empty, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert str(site) in run.stderr, "the wheel's copy ran"
    tables = {r[0] for r in sqlite3.connect(empty / "var" / "sync.db").execute("SELECT name FROM sqlite_master")}
    assert {"events", "user_links", "user_intents", "alembic_version"} <= tables
    assert not (empty / "alembic.ini").exists() and not (empty / "migrations").exists()


def test_the_container_runs_the_server_as_pid_1() -> None:
    """`sh -c "a && b"` keeps sh as PID 1, which ignores docker stop's SIGTERM: the server must be exec'd."""
    cmd = next(line for line in (ROOT_DIR / "Dockerfile").read_text().splitlines() if line.startswith("CMD"))
    assert "exec moodle-sync serve" in cmd
