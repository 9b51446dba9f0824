"""Engine and sessions: one engine per process, one session per request or job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.db.tenancy import session_info
from app.db.tenants import DEFAULT_TENANT_ID

SessionFactory = async_sessionmaker[AsyncSession]


def make_engine(url: str, **kw: Any) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kw)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    kw.setdefault("pool_size", 10)
    kw.setdefault("max_overflow", 10)
    kw.setdefault("pool_pre_ping", True)
    # asyncpg prepares every statement; after five runs PostgreSQL may switch a prepared statement to a generic
    # plan, chosen blind to the parameters and to statistics gone stale in a burst, and the claim query stalled a
    # first sync (BENCHMARKS.md): plan each execution for its values.
    kw.setdefault("connect_args", {"server_settings": {"plan_cache_mode": "force_custom_plan"}})
    return create_async_engine(url, **kw)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers work while a writer commits; foreign keys are off by default in SQLite.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_session_factory(engine: AsyncEngine, tenant_id: int = DEFAULT_TENANT_ID) -> SessionFactory:
    """Sessions of one tenant: every ORM query they run is scoped to it, every row they add is stamped with it
    (app.db.tenancy)."""
    return async_sessionmaker(engine, expire_on_commit=False, info=session_info(tenant_id))
