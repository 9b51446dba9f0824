"""Named leases in the database: one holder at a time across all workers, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import delete, or_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.models import Lease
from app.db.tenancy import tenant_of
from app.db.types import utcnow
from app.db.upsert import insert_for


async def acquire(session: AsyncSession, name: str, owner: str, seconds: float) -> bool:
    """Take or renew the lease; True when ``owner`` holds it until now + seconds. The caller commits."""
    return name in await acquire_many(session, [name], owner, seconds)


async def acquire_many(session: AsyncSession, names: Sequence[str], owner: str, seconds: float) -> set[str]:
    """``acquire`` for several leases in two statements, taken in the order given (give every caller one order:
    two callers then never wait on each other in a cycle). The names ``owner`` now holds. The caller commits."""
    if not names:
        return set()
    now = utcnow()
    expires = now + timedelta(seconds=seconds)
    tenant = tenant_of(session)
    made = await session.execute(
        insert_for(session, Lease)
        .values([{"tenant_id": tenant, "name": n, "owner": owner, "expires_at": expires} for n in names])
        .on_conflict_do_nothing()
        .returning(Lease.name)
    )
    held = set(made.scalars())
    rest = [n for n in names if n not in held]
    if rest:
        # Held by someone: taken over once expired, or renewed when it is ours already.
        taken = await session.execute(
            update(Lease)
            .where(col(Lease.name).in_(rest), or_(col(Lease.expires_at) < now, col(Lease.owner) == owner))
            .values(owner=owner, expires_at=expires)
            .returning(col(Lease.name))
            .execution_options(synchronize_session=False)
        )
        held.update(taken.scalars())
    return held


async def release(session: AsyncSession, name: str, owner: str) -> None:
    await release_many(session, [name], owner)


async def release_many(session: AsyncSession, names: Sequence[str], owner: str) -> None:
    """Give up the leases ``owner`` holds of these names (the others are left as they are)."""
    if names:
        await session.execute(delete(Lease).where(col(Lease.name).in_(list(names)), col(Lease.owner) == owner))
