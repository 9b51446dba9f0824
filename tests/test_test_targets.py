"""The suite never touches an operator's data: its targets are its own variables, and risky ones are refused."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT_DIR, target_problems


def test_a_database_without_test_in_its_name_is_refused() -> None:
    problems = target_problems({"SYNC_TEST_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1/sync"})
    assert len(problems) == 1 and "'sync'" in problems[0] and "SYNC_TEST_DATABASE_URL" in problems[0]
    assert target_problems({"SYNC_TEST_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1/sync_test"}) == []
    assert target_problems({"SYNC_TEST_DATABASE_URL": "sqlite+aiosqlite:////tmp/x/test.db"}) == []
    assert target_problems({"SYNC_TEST_DATABASE_URL": "sqlite+aiosqlite:////srv/test/sync.db"}) != [], "the file name"


def test_the_services_own_redis_is_refused() -> None:
    same = {"SYNC_TEST_REDIS_URL": "redis://127.0.0.1:6379/0", "SYNC_REDIS_URL": "redis://127.0.0.1:6379/0"}
    (problem,) = target_problems(same)
    assert "SYNC_REDIS_URL" in problem
    assert target_problems({**same, "SYNC_TEST_REDIS_URL": "redis://127.0.0.1:6379/15"}) == []


def test_the_suite_stops_before_any_test_and_ignores_the_services_variables() -> None:
    """A run pointed at a non-test database stops at once (exit 4, usage error) naming the variable; the service's
    own SYNC_DATABASE_URL is not a target at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    bad = {**env, "SYNC_TEST_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1/production"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_test_targets.py", "-k", "never"],
        env=bad, cwd=ROOT_DIR, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 4, run.stdout + run.stderr
    assert "'production'" in run.stdout + run.stderr
    assert "SYNC_DATABASE_URL" not in os.environ, "the service's variables are removed for the tests"
