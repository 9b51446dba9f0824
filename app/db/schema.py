"""Which schema this version of the code needs, and whether the database has it.

Serving on a database that is not migrated answered webhooks with 500s and every command with an SQL traceback
("no such table: events"); the service now refuses to start, and /readyz says not ready, naming the command.
"""

from __future__ import annotations

from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

# The newest migration under migrations/versions (a test keeps the two equal).
HEAD = "20261207_0019"


async def schema_problem(engine: AsyncEngine) -> str | None:
    """None when the database is at HEAD; else what is wrong and what to run. A database that does not answer
    raises, as any connection would."""
    async with engine.connect() as conn:
        if not await conn.run_sync(lambda c: inspect(c).has_table("alembic_version")):
            return "the database has no schema yet: run `moodle-sync migrate`"
        rows = sorted((await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars())
    if not rows:
        return "the database has no schema yet: run `moodle-sync migrate`"
    if rows != [HEAD]:
        return f"the database schema is at {', '.join(rows)}, this version needs {HEAD}: run `moodle-sync migrate`"
    return None
