"""INSERT ... ON CONFLICT for the dialect a session is bound to (PostgreSQL and SQLite spell it alike)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.dialect import on_postgres


def insert_for(session: AsyncSession, table: Any) -> Any:
    """An INSERT of ``table`` (a model or a Table) that offers ``on_conflict_do_nothing`` / ``_do_update``."""
    if session.bind is None:
        raise RuntimeError("insert_for needs a session bound to an engine")
    insert = pg_insert if on_postgres(session) else sqlite_insert
    return insert(table)
