"""Which database a session works on, asked in one place: PostgreSQL, or the newcomer's SQLite."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession


def on_postgres(session: AsyncSession) -> bool:
    """Whether ``session`` is bound to PostgreSQL (else SQLite: the statements that differ ask this)."""
    return session.bind is not None and session.bind.dialect.name == "postgresql"
