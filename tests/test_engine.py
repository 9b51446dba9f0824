"""Database sessions as the service opens them."""

from __future__ import annotations

import sqlalchemy as sa

from app.runtime import Runtime
from tests.conftest import postgres_only


async def test_postgresql_plans_each_statement_for_its_values(runtime: Runtime) -> None:
    """A generic plan of the claim query, chosen on statistics a burst had made stale, took seconds a claim and
    stalled a first sync of 30,000 events (bench/first_sync.py); custom plans take milliseconds."""
    postgres_only("plan_cache_mode is a PostgreSQL setting")
    async with runtime.sessions() as s:
        assert (await s.execute(sa.text("SHOW plan_cache_mode"))).scalar_one() == "force_custom_plan"
    async with runtime.intake._sessions() as s:  # the intake's own pool, too
        assert (await s.execute(sa.text("SHOW plan_cache_mode"))).scalar_one() == "force_custom_plan"


async def test_a_claim_walks_the_fresh_events_in_order_and_stops_at_its_batch(runtime: Runtime) -> None:
    """With statistics taken before a burst (as autoanalyze leaves them in a first sync), the claim of fresh events is
    still planned as an ordered walk of ix_events_fresh that stops at its limit, not as a collect-and-sort of the whole
    backlog (37 ms a claim at 15,000 waiting, most of a first sync's database time)."""
    postgres_only("the plan is PostgreSQL's")
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
                    "tenant_id": 0,
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
        if statement.startswith("UPDATE events") and "ANY" in statement:  # its take of the picked ids
            takes.append((statement, tuple(parameters)))  # type: ignore[arg-type]

    takes: list[tuple[str, tuple[object, ...]]] = []

    sa.event.listen(runtime.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with runtime.sessions() as s:
            claimed = await claim.claim(s, kinds=["contact.upserted"], limit=100, lease_seconds=60)
            assert [e.dedupe_key for e in claimed] == [f"burst-{i}" for i in range(3000, 3100)]
            await s.rollback()
    finally:
        sa.event.remove(runtime.engine.sync_engine, "before_cursor_execute", record)
    retries, lapsed, fresh = seen  # the due retries, the lapsed leases, then the fresh events
    assert "next_attempt_at <=" in retries[0] and "lease_until <" in lapsed[0] and "next_attempt_at" not in fresh[0]
    # Each due pick reads its own small partial index, not the tenant's index of every open event (16 ms a claim at a
    # backlog of 30,000 when both were one statement); the take finds the picked ids by primary key alone.
    p1 = await _plan(runtime, *retries)
    assert "ix_events_retry_due" in p1, p1
    assert "ix_events_lease" in await _plan(runtime, *lapsed), lapsed
    assert len(takes) == 1 and "tenant_id" not in takes[0][0].split("WHERE")[1].split("RETURNING")[0], takes
    take = await _plan(runtime, *takes[0])
    assert "ix_events_subject" not in take and "tenant_id" not in take, take
    plan = await _plan(runtime, *fresh, ordered_walk=True)
    assert "Index Scan using ix_events_fresh" in plan, plan
    assert not any(way in plan for way in ("Sort", "Bitmap", "Seq Scan", "Hash")), plan
    # The subject probe is one look-up per candidate with the subject in its index condition, not an anti-join that
    # walks every open event for each candidate (88 s a claim at 30,000 waiting, with these statistics).
    assert "Anti Join" not in plan and "SubPlan" in plan, plan
    probe = plan[plan.index("SubPlan") :]
    assert "ix_events_open_subject" in probe and "subject = (events.subject)" in probe, plan


async def _plan(runtime: Runtime, sql: str, params: tuple[object, ...], *, ordered_walk: bool = False) -> str:
    from app.db import claim

    async with runtime.sessions() as s:
        conn = await s.connection()
        if ordered_walk:
            await s.execute(claim._WALK["off"])
        plan = "\n".join(r[0] for r in (await conn.exec_driver_sql("EXPLAIN " + sql, params)).all())
        await s.rollback()
    return plan


async def test_the_timers_read_partial_indexes_not_the_years_of_events_kept(runtime: Runtime) -> None:
    """Event rows are kept for good: the retention purge (every sweep) and /metrics' backlog (every scrape) must read
    small partial indexes, not walk the table (220 and 275 ms at 1,000,000 events)."""
    postgres_only("the plan is PostgreSQL's")
    from datetime import timedelta

    from app.db import backlog as monitor
    from app.db.models import Event
    from app.db.types import utcnow
    from app.sync import operations

    now = utcnow()
    old = now - timedelta(days=400)
    rows = [
        {
            "source": "coursesales",
            "kind": "contact.upserted",
            "dedupe_key": f"kept-{i}",
            "body_hash": "-",
            "subject": f"contact:{i}",
            # Years of finished events (their payloads purged below), then the last few days' and a few open ones.
            "tenant_id": 0,
            "payload": {"n": i},
            "status": "queued" if i % 1000 == 999 else "failed" if i % 500 == 0 else "done",
            "attempts": 1,
            "created_at": old if i < 20_000 else now,
            "updated_at": old if i < 20_000 else now,
        }
        for i in range(21_000)
    ]
    async with runtime.sessions() as s:
        await s.execute(sa.insert(Event.__table__), rows)  # type: ignore[attr-defined]
        assert await operations.purge(s, days=90) == 19_980  # the 20 old open ones keep theirs
        await s.commit()
        await s.execute(sa.text("ANALYZE events"))
        await s.commit()

    seen: list[tuple[str, tuple[object, ...]]] = []

    def record(conn: object, cursor: object, statement: str, parameters: object, context: object, many: bool) -> None:
        if "events" in statement:
            seen.append((statement, tuple(parameters)))  # type: ignore[arg-type]

    sa.event.listen(runtime.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with runtime.sessions() as s:
            backlog = await monitor.backlog(s)
            purged = await operations.purge(s, days=90)
            await s.rollback()
    finally:
        sa.event.remove(runtime.engine.sync_engine, "before_cursor_execute", record)
    assert backlog.counts["queued"] == 21 and backlog.counts["failed"] == 42 and purged == 0
    assert len(seen) == 3, seen
    async with runtime.sessions() as s:
        conn = await s.connection()
        plans = ["\n".join(r[0] for r in (await conn.exec_driver_sql("EXPLAIN " + q, p)).all()) for q, p in seen]
        await s.rollback()
    for plan in plans:
        assert "Seq Scan" not in plan, plan
    open_plan, attention_plan, purge_plan = plans
    assert "ix_events_open_subject" in open_plan, open_plan
    assert "ix_events_attention" in attention_plan, attention_plan
    assert "ix_events_payload_kept" in purge_plan, purge_plan
