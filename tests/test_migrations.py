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


async def _run(url: str, *statements: str) -> list[tuple]:
    from sqlalchemy import text

    engine = make_engine(url)
    rows: list[tuple] = []
    async with engine.begin() as conn:
        for statement in statements:
            result = await conn.execute(text(statement))
            if result.returns_rows:
                rows = [tuple(r) for r in result]
    await engine.dispose()
    return rows


def test_open_attempts_of_earlier_versions_end_as_the_finish_now_writes_them(migrated: str) -> None:
    """20261207_0019: an attempt's row is written once, finished. A running event's current open row is dropped
    (its finish writes it); an older open one was lost by a stopped worker and says so; finished ones stay."""
    run_migrations(migrated, "20261206_0018", downgrade=True)
    event = (
        "INSERT INTO events (id, tenant_id, source, kind, dedupe_key, body_hash, status, attempts, created_at,"
        " updated_at) VALUES ({id}, 1, 'coursesales', 'contact.upserted', 'm-{id}', 'h', '{status}', {n},"
        " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
    )
    attempt = (
        "INSERT INTO attempts (tenant_id, event_id, number, started_at, finished_at, outcome) VALUES"
        " (1, {id}, {n}, CURRENT_TIMESTAMP, {finished}, '{outcome}')"
    )
    asyncio.run(
        _run(
            migrated,
            event.format(id=71, status="running", n=2),
            attempt.format(id=71, n=1, finished="NULL", outcome="running"),  # lost by a worker that stopped
            attempt.format(id=71, n=2, finished="NULL", outcome="running"),  # the current one
            event.format(id=72, status="done", n=1),
            attempt.format(id=72, n=1, finished="CURRENT_TIMESTAMP", outcome="done"),
        )
    )
    run_migrations(migrated, "head")
    rows = asyncio.run(
        _run(migrated, "SELECT event_id, number, outcome, error FROM attempts ORDER BY event_id, number")
    )
    assert [(e, n, o) for e, n, o, _ in rows] == [(71, 1, "lost"), (72, 1, "done")]
    assert "lease ran out" in rows[0][3] and rows[1][3] is None
