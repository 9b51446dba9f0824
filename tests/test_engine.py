"""Database sessions as the service opens them."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app.runtime import Runtime


async def test_postgresql_plans_each_statement_for_its_values(runtime: Runtime) -> None:
    """A generic plan of the claim query, chosen on statistics a burst had made stale, took seconds a claim and
    stalled a first sync of 30,000 events (bench/first_sync.py); custom plans take milliseconds."""
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("plan_cache_mode is a PostgreSQL setting")
    async with runtime.sessions() as s:
        assert (await s.execute(sa.text("SHOW plan_cache_mode"))).scalar_one() == "force_custom_plan"
    async with runtime.intake._sessions() as s:  # the intake's own pool, too
        assert (await s.execute(sa.text("SHOW plan_cache_mode"))).scalar_one() == "force_custom_plan"


async def test_a_claim_walks_the_fresh_events_in_order_and_stops_at_its_batch(runtime: Runtime) -> None:
    """With statistics taken before a burst (as autoanalyze leaves them in a first sync), the claim of fresh events is
    still planned as an ordered walk of ix_events_fresh that stops at its limit, not as a collect-and-sort of the whole
    backlog (37 ms a claim at 15,000 waiting, most of a first sync's database time)."""
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("the plan is PostgreSQL's")
    from app.db import claim
    from app.db.models import Event
    from app.db.types import utcnow

    async with runtime.sessions() as s:
        await s.execute(sa.text("ANALYZE events"))  # statistics of an empty inbox
        now = utcnow()
        await s.execute(
            sa.insert(Event.__table__),  # type: ignore[attr-defined]
            [
                {
                    "source": "coursesales",
                    "kind": "contact.upserted",
                    "dedupe_key": f"burst-{i}",
                    "body_hash": "-",
                    "subject": f"contact:{i}",
                    "status": "done" if i < 3000 else "queued",
                    "attempts": 0,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(6000)
            ],
        )
        await s.commit()

    seen: list[tuple[str, tuple[object, ...]]] = []

    def record(conn: object, cursor: object, statement: str, parameters: object, context: object, many: bool) -> None:
        if statement.startswith("SELECT events.id") and "FOR UPDATE" in statement:  # the claim's picks
            seen.append((statement, tuple(parameters)))  # type: ignore[arg-type]

    sa.event.listen(runtime.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with runtime.sessions() as s:
            claimed = await claim.claim(s, kinds=["contact.upserted"], limit=100, lease_seconds=60)
            assert [e.dedupe_key for e in claimed] == [f"burst-{i}" for i in range(3000, 3100)]
            await s.rollback()
    finally:
        sa.event.remove(runtime.engine.sync_engine, "before_cursor_execute", record)
    fresh = [(sql, params) for sql, params in seen if "next_attempt_at <=" not in sql]  # not the due retries
    assert len(seen) == 2 and len(fresh) == 1, seen
    sql, params = fresh[0]
    async with runtime.sessions() as s, claim._ordered_walk(s):
        conn = await s.connection()
        plan = "\n".join(r[0] for r in (await conn.exec_driver_sql("EXPLAIN " + sql, params)).all())
        await s.rollback()
    assert "Index Scan using ix_events_fresh" in plan, plan
    assert not any(way in plan for way in ("Sort", "Bitmap", "Seq Scan", "Hash")), plan
