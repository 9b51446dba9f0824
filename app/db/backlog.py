"""The inbox as a monitor sees it (/metrics, health): what is open and what waits for a person."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.models import ATTENTION_STATUSES, OPEN_STATUSES, Event
from app.db.ops_tables import UpstreamState
from app.db.tenancy import ALL_TENANTS
from app.db.tenants import DEFAULT_SLUG, DEFAULT_TENANT_ID, Tenant


@dataclass(frozen=True)
class Backlog:
    """The inbox as a monitor sees it: how many events are open or wait for a person, by status, and the oldest
    open one's arrival. Finished events are counted by ``sync_events_finished_total``, not here: they are kept for
    good, and counting them walked the whole table on every scrape."""

    counts: dict[str, int]
    oldest_open: datetime | None


async def tenant_slugs(session: AsyncSession) -> dict[int, str]:
    """The registered tenants' slugs by id ({} while none is: a single-provider install's /metrics is as it was)."""
    return dict((await session.execute(select(col(Tenant.id), col(Tenant.slug)))).all())


async def open_by_tenant(session: AsyncSession, slugs: dict[int, str]) -> dict[str, int]:
    """Each tenant's open events, by slug: every registered tenant of ``slugs`` (0 when it has none) and default;
    {} while no tenant is registered."""
    if not slugs:
        return {}
    counts = dict(
        (
            await session.execute(
                select(col(Event.tenant_id), func.count())
                .where(col(Event.status).in_(list(OPEN_STATUSES)))
                .group_by(col(Event.tenant_id))
                .execution_options(**ALL_TENANTS)
            )
        ).all()
    )
    return {DEFAULT_SLUG: counts.get(DEFAULT_TENANT_ID, 0)} | {slug: counts.get(i, 0) for i, slug in slugs.items()}


async def upstream_problems_by_tenant(session: AsyncSession, slugs: dict[int, str]) -> list[tuple[str, str, str]]:
    """(tenant slug, upstream, state) of every tenant's upstream that cannot be used now, as the probes and the
    jobs recorded it (unavailable, auth_failed); [] while no tenant is registered (the default tenant's states are
    ``sync_upstream_state``, as before)."""
    if not slugs:
        return []
    rows = await session.execute(
        select(col(UpstreamState.tenant_id), col(UpstreamState.name), col(UpstreamState.state))
        .where(col(UpstreamState.state) != "ok")
        .execution_options(**ALL_TENANTS)
    )
    names = {DEFAULT_TENANT_ID: DEFAULT_SLUG, **slugs}
    return sorted((names[t], name, state) for t, name, state in rows.all() if t in names)


async def backlog(session: AsyncSession, *, every_tenant: bool = False) -> Backlog:
    """Two reads of small partial indexes (open events, events waiting for a person), whatever the table's size: the
    session's tenant's, or ``every_tenant``'s (the deployment's monitor, /metrics)."""
    scope = ALL_TENANTS if every_tenant else {}
    open_rows = (
        await session.execute(
            select(col(Event.status), func.count(), func.min(col(Event.created_at)))
            .where(col(Event.status).in_(list(OPEN_STATUSES)))
            .group_by(col(Event.status))
            .execution_options(**scope)
        )
    ).all()
    attention = (
        await session.execute(
            select(col(Event.status), func.count())
            .where(col(Event.status).in_(list(ATTENTION_STATUSES)))
            .group_by(col(Event.status))
            .execution_options(**scope)
        )
    ).all()
    counts = {str(s): 0 for s in (*OPEN_STATUSES, *ATTENTION_STATUSES)}
    counts.update({status: n for status, n, _ in open_rows})
    counts.update({status: n for status, n in attention})
    oldest = min((first for _, _, first in open_rows), default=None)
    return Backlog(counts, oldest)
