"""Named leases in the database: one holder at a time across all workers, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Lease
from app.db.types import utcnow


async def acquire(session: AsyncSession, name: str, owner: str, seconds: float) -> bool:
    """Take or renew the lease; True when ``owner`` holds it until now + seconds. The caller commits."""
    now = utcnow()
    expires = now + timedelta(seconds=seconds)
    insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    made = await session.execute(
        insert(Lease).values(name=name, owner=owner, expires_at=expires).on_conflict_do_nothing().returning(Lease.name)
    )
    if made.scalar_one_or_none() is not None:
        return True
    taken = await session.execute(
        update(Lease)
        .where(Lease.name == name, or_(Lease.expires_at < now, Lease.owner == owner))
        .values(owner=owner, expires_at=expires)
        .execution_options(synchronize_session=False)
    )
    return taken.rowcount == 1


async def release(session: AsyncSession, name: str, owner: str) -> None:
    await session.execute(delete(Lease).where(Lease.name == name, Lease.owner == owner))
