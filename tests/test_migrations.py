"""Alembic from empty to head and back, on the configured database (PostgreSQL in CI)."""

from __future__ import annotations

import asyncio

from sqlalchemy import inspect

from app.cli import run_migrations
from app.db.engine import make_engine


async def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await engine.dispose()
    return names - {"alembic_version"}


def test_upgrade_downgrade_upgrade(migrated: str) -> None:
    # Alembic runs its own event loop, so this test is synchronous.
    assert {"events", "attempts", "user_links", "leases"} <= asyncio.run(_tables(migrated))
    run_migrations(migrated, "base", downgrade=True)
    assert asyncio.run(_tables(migrated)) == set()
    run_migrations(migrated, "head")
    assert {"events", "attempts", "user_links", "leases"} <= asyncio.run(_tables(migrated))
