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
