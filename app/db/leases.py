"""Named leases in the database: one holder at a time across all workers, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, or_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.models import Lease
from app.db.tenancy import tenant_of
from app.db.types import utcnow
from app.db.upsert import insert_for


async def acquire(session: AsyncSession, name: str, owner: str, seconds: float) -> bool:
    """Take or renew the lease; True when ``owner`` holds it until now + seconds. The caller commits."""
    now = utcnow()
    expires = now + timedelta(seconds=seconds)
    made = await session.execute(
        insert_for(session, Lease)
        .values(tenant_id=tenant_of(session), name=name, owner=owner, expires_at=expires)
        .on_conflict_do_nothing()
        .returning(Lease.name)
    )
    if made.scalar_one_or_none() is not None:
        return True
    # An UPDATE yields a CursorResult; AsyncSession.execute is typed with the Result base that lacks rowcount.
    taken = cast(
        CursorResult[Any],
        await session.execute(
            update(Lease)
            .where(col(Lease.name) == name, or_(col(Lease.expires_at) < now, col(Lease.owner) == owner))
            .values(owner=owner, expires_at=expires)
            .execution_options(synchronize_session=False)
        ),
    )
    return taken.rowcount == 1


async def release(session: AsyncSession, name: str, owner: str) -> None:
    await session.execute(delete(Lease).where(col(Lease.name) == name, col(Lease.owner) == owner))
