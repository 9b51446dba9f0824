"""Which schema this version of the code needs, and whether the database has it.

Serving on a database that is not migrated answered webhooks with 500s and every command with an SQL traceback
("no such table: events"); the service now refuses to start, and /readyz says not ready, naming the command.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

# The newest migration under migrations/versions (a test keeps the two equal).
HEAD = "20261206_0009"


async def schema_problem(engine: AsyncEngine) -> str | None:
    """None when the database is at HEAD; else what is wrong and what to run."""
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
    except DBAPIError:  # no alembic_version table: never migrated (a database that does not answer raises later)
        rows = None
        if not await _answers(engine):
            raise
    if not rows:
        return "the database has no schema yet: run `moodle-sync migrate`"
    if rows != [HEAD]:
        found = ", ".join(sorted(rows))
        return f"the database schema is at {found}, this version needs {HEAD}: run `moodle-sync migrate`"
    return None


async def _answers(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except DBAPIError:
        return False
    return True
