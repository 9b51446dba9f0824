"""Shared fixtures: real database (PostgreSQL in CI, SQLite by default), real Redis, the Moodle fake."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import delete
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

import app.db.models as models
from app.cli import run_migrations
from app.jobs.queue import Queue, connect
from app.jobs.redis import redis_settings, stop_embedded
from app.main import create_app
from app.runtime import Runtime, build_runtime
from app.settings import Settings, WebhookSettings

pytest_plugins = ["tests.smtp_inbox"]  # the `smtp` fixture: a real SMTP server

# The suite's own targets, never the service's: `make test` empties the database and flushes the Redis it is given.
ROOT_DIR = Path(__file__).resolve().parent.parent
TEST_DATABASE_URL = os.environ.get("SYNC_TEST_DATABASE_URL", "")
TEST_REDIS_URL = os.environ.get("SYNC_TEST_REDIS_URL", "")
ON_POSTGRES = TEST_DATABASE_URL.startswith("postgresql")


def target_problems(environ: dict[str, str] | os._Environ[str]) -> list[str]:
    """Why the suite must not run against these targets (it drops every table and flushes Redis)."""
    out = []
    database = environ.get("SYNC_TEST_DATABASE_URL", "")
    if database:
        name = make_url(database).database or ""
        if "test" not in Path(name).name.lower():
            out.append(
                f"SYNC_TEST_DATABASE_URL names database {name!r}: the suite empties it, so its name must contain 'test'"
            )
    redis = environ.get("SYNC_TEST_REDIS_URL", "")
    if redis and redis == environ.get("SYNC_REDIS_URL"):
        out.append(
            "SYNC_TEST_REDIS_URL is the service's own SYNC_REDIS_URL: the suite flushes it; give it another database"
        )
    return out


def pytest_configure(config: pytest.Config) -> None:
    problems = target_problems(os.environ)
    if problems:
        raise pytest.UsageError("\n".join(problems))
    # The service's own variables (an operator's exported SYNC_DATABASE_URL, say) never reach a test.
    for name in [n for n in os.environ if n.startswith("SYNC_") and not n.startswith(("SYNC_TEST_", "SYNC_BENCH_"))]:
        del os.environ[name]


def postgres_only(why: str) -> None:
    """Skip a test that needs PostgreSQL on another database; under CI (CI=true) fail instead: CI runs them all."""
    if ON_POSTGRES:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"needs PostgreSQL (SYNC_TEST_DATABASE_URL): {why}")
    pytest.skip(why)


TEST_TOKENS = {
    "api": "ops-token-for-tests",
    "coursesales": "cs-token-for-tests",
    "moodle": "moodle-token-for-tests",
    "compat": "compat-wstoken-for-tests",
    "secret_key": "secret-key-for-tests-0123456789abcdef",
    "cs_whsec": "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "hub": "hub-token-for-tests-0123",
}
MOODLE_URL = "http://moodle.test"
COURSESALES_URL = "http://coursesales.test"


@pytest.fixture(scope="session")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("var")


@pytest.fixture(scope="session")
def database_url(var_dir: Path) -> str:
    return TEST_DATABASE_URL or f"sqlite+aiosqlite:///{var_dir / 'test.db'}"


@pytest.fixture(scope="session")
def migrated(database_url: str) -> str:
    """The schema built by the migrations themselves, from empty."""
    run_migrations(database_url, "base", downgrade=True)
    run_migrations(database_url, "head")
    return database_url


def make_settings(database_url: str, var_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "mode": "test",
        "var_dir": var_dir,
        "database_url": database_url,
        "redis_url": TEST_REDIS_URL,
        "secret_key": SecretStr(TEST_TOKENS["secret_key"]),
        "api": {"token": SecretStr(TEST_TOKENS["api"])},
        "hub": {"token": SecretStr(TEST_TOKENS["hub"])},
        "compat": {"wstoken": SecretStr(TEST_TOKENS["compat"])},
        "webhooks": WebhookSettings(
            coursesales_token=SecretStr(TEST_TOKENS["coursesales"]),
            coursesales_secret=SecretStr(TEST_TOKENS["cs_whsec"]),
            moodle_token=SecretStr(TEST_TOKENS["moodle"]),
        ),
        "moodle": {"url": MOODLE_URL, "token": SecretStr("test-token")},
        "coursesales": {"url": COURSESALES_URL, "username": "SOAP_USER", "password": SecretStr("SOAP_PASSWORD")},
    }
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
def settings(migrated: str, var_dir: Path) -> Settings:
    return make_settings(migrated, var_dir)


@pytest.fixture(scope="session", autouse=True)
def _embedded_redis_cleanup() -> Iterator[None]:
    yield
    stop_embedded()


@pytest.fixture
async def clean_db(migrated: str, var_dir: Path) -> AsyncIterator[None]:
    """Every test starts with empty tables (children first)."""
    rt = build_runtime(make_settings(migrated, var_dir))
    try:
        # No retry: a previous test's background task still writing would be a leak (no_loops_left_running).
        async with rt.engine.begin() as conn:
            for table in reversed(SQLModel.metadata.sorted_tables):
                await conn.execute(delete(table))
    finally:
        await rt.close()
    yield


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Any]:
    """A private redis-server: stopping it cannot disturb the shared one."""
    from tests.procs import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop(kill=True)


@pytest.fixture
def served_moodle(moodle_fake: Any) -> Iterator[Any]:
    """The test's Moodle fake on a real port: subprocesses call it, the test inspects the same object."""
    from tests.procs import ServedApp

    with ServedApp(moodle_fake) as served:
        yield served


@pytest.fixture
def moodle_fake() -> Any:
    from tests.fakes.moodle import MoodleFake

    return MoodleFake(version="4.3", token="test-token")


@pytest.fixture
def coursesales_fake() -> Any:
    from tests.fakes.coursesales import CourseSalesFake

    return CourseSalesFake()


@pytest.fixture
def catalogue(coursesales_fake: Any) -> Any:
    """CourseSales with two categories (one mapped to Moodle category 2) and their course dates."""
    coursesales_fake.add_category(500, "First Aid", moodle_category_id="2")
    coursesales_fake.add_category(600, "Forklift")
    for n in range(5):
        coursesales_fake.add_course_date(9000 + n, f"2026-12-0{n + 1}", f"2026-12-0{n + 1}", 500)
    coursesales_fake.add_course_date(9100, "2026-12-10", "2026-12-10", 600)
    coursesales_fake.add_course_date(9200, "2026-12-11", "2026-12-11", 500, status_id=3)
    return coursesales_fake


@pytest.fixture
async def runtime(
    settings: Settings, moodle_fake: Any, coursesales_fake: Any, clean_db: None
) -> AsyncIterator[Runtime]:
    """A runtime whose Moodle and CourseSales are the fakes and whose queue is a real Redis, emptied first."""
    rt = build_runtime(
        settings,
        moodle_transport=httpx.ASGITransport(app=moodle_fake),
        coursesales_transport=httpx.ASGITransport(app=coursesales_fake),
    )
    rt.queue = Queue(connect(redis_settings(settings)))
    await rt.queue.redis.flushdb()
    yield rt
    await rt.close()


@asynccontextmanager
async def app_client(runtime: Runtime, base_url: str = "http://sync.test") -> AsyncIterator[httpx.AsyncClient]:
    """The app on ``runtime``, started, and a client calling it in process (``https://...``: as if over TLS)."""
    app = create_app(runtime.settings, runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as c:
            yield c


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(runtime) as c:
        yield c


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_TOKENS[name]}"}


__all__ = [
    "MOODLE_URL",
    "ON_POSTGRES",
    "TEST_REDIS_URL",
    "TEST_TOKENS",
    "bearer",
    "make_settings",
    "models",
    "postgres_only",
]


@pytest.fixture(autouse=True)
async def no_loops_left_running() -> AsyncIterator[None]:
    """A worker's loops (sweeper, reconcile, alerts) must end with their test: a sweeper left running holds its
    lease, and a later test's sweep then silently does nothing."""
    yield
    loops = [
        t
        for t in asyncio.all_tasks()
        if not t.done() and t.get_coro().__qualname__ in BACKGROUND  # type: ignore[union-attr]
    ]
    # A loop cancelled at teardown may still be finishing its round (a sweeper mid-transaction holds SQLite's write
    # lock): wait for it to end here, so the next test starts on a quiet database.
    stopping = [t for t in loops if t.cancelling()]
    if stopping:
        await asyncio.wait(stopping, timeout=10)
    left = [t.get_coro().__qualname__ for t in loops if not t.done()]  # type: ignore[union-attr]
    assert not left, f"background loops left running: {left}"


# The workers' background tasks (app.jobs: sweeper, probe, alerts, reconcile schedule, the release at start).
BACKGROUND = frozenset({"run_forever", "run_periodically", "run_tenants_periodically", "release_held"})
