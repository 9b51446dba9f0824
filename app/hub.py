"""The hub: the runtime of each registered tenant, beside the tenant default's (the process's own).

A tenant's runtime (app.runtime.tenant_runtime) holds its Settings (app.tenant_settings: the hub's process-wide
settings with the tenant's sections and secrets over them), its Moodle and CourseSales clients and a session
factory scoped to it (app.db.tenancy); the engine, the vault, the queue and the intake are the home runtime's. It is
made when the tenant is first asked for (a delivery, a job, an API call), not at start-up, and read again from the
registry when it is older than ``FRESH_SECONDS``: a change made through another process (`moodle-sync tenants
update`, the API of another replica) reaches this one within that time, a disabled tenant stops being served.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Select, func, select
from sqlmodel import col

from app.db.models import Event, Run
from app.db.tenancy import ALL_TENANTS
from app.db.tenants import DEFAULT_SLUG, DEFAULT_TENANT_ID, Tenant
from app.intake_limit import IntakeLimit
from app.runtime import Runtime, tenant_runtime
from app.sync import tenants
from app.tenant_settings import tenant_settings

log = structlog.get_logger(__name__)

FRESH_SECONDS = 5.0
QUIET_SECONDS = 300.0  # a runtime not asked for this long is closed (its upstream clients with it)


@dataclass
class _Held:
    runtime: Runtime
    updated_at: datetime
    checked: float  # time.monotonic() of the last read of its registry row
    served: float = 0.0  # time.monotonic() of the last time it was asked for


@dataclass
class Turns:
    """Whose turn it was last (app.jobs.fairness), the rounds each tenant has running in this process, and whether
    any tenant is registered, as last read."""

    last_served: int = -1
    registered: bool = False
    checked: float = 0.0
    running: Counter[int] = field(default_factory=Counter)


class Hub:
    def __init__(self, home: Runtime) -> None:
        self.home = home
        self._held: dict[int, _Held] = {}
        self._lock = asyncio.Lock()
        self._cursor = 0  # the last tenant id of the walk in slices (next_slice)
        self.turns = Turns()
        self.intake = IntakeLimit()  # each registered tenant's deliveries a second (hub.intake_per_second)

    async def by_id(self, tenant_id: int) -> Runtime | None:
        """The tenant's runtime; None when it is not registered or is disabled (nothing is done for it)."""
        if tenant_id == DEFAULT_TENANT_ID:
            return self.home
        held = self._held.get(tenant_id)
        if held is not None and time.monotonic() - held.checked < FRESH_SECONDS:
            return self._served(held)
        async with self.home.sessions() as s:
            tenant = await s.get(Tenant, tenant_id)
        return await self._runtime_of(tenant_id, tenant)

    async def by_slug(self, slug: str) -> tuple[Runtime | None, bool]:
        """(the runtime of the tenant with this slug, whether it is registered): ``default`` is the home runtime; a
        disabled tenant has none."""
        if slug == DEFAULT_SLUG:
            return self.home, True
        for held in self._held.values():
            if held.runtime.slug == slug and time.monotonic() - held.checked < FRESH_SECONDS:
                return self._served(held), True
        async with self.home.sessions() as s:
            tenant = (await s.execute(select(Tenant).where(col(Tenant.slug) == slug))).scalar_one_or_none()
        if tenant is None:
            return None, False
        return await self._runtime_of(tenant.id, tenant), True

    async def by_credential(self, value: str, names: Iterable[str]) -> tuple[Runtime | None, str | None]:
        """(the runtime, the credential's name) of the registered tenant given ``value`` as one of ``names``, found
        by its keyed hash in one read; (None, None) when no tenant was; (None, name) when its tenant is disabled."""
        async with self.home.sessions() as s:
            found = await tenants.find_by_credential(s, self.home.vault, value, names=frozenset(names))
        if found is None:
            return None, None
        tenant, name = found
        return await self.by_id(tenant.id), name

    async def owner_of(self, model: type[Event | Run], row_id: int) -> tuple[Runtime | None, bool]:
        """(the runtime of the tenant an event or a run belongs to, whether the row exists): a job, given an id,
        reads whose it is first (the one read across tenants a job makes)."""
        async with self.home.sessions() as s:
            statement = select(col(model.tenant_id)).where(col(model.id) == row_id).execution_options(**ALL_TENANTS)
            tenant_id = (await s.execute(statement)).scalar_one_or_none()
        if tenant_id is None:
            return None, False
        return await self.by_id(tenant_id), True

    async def with_work(self, tenant_ids: Select[Any]) -> list[Runtime]:
        """The runtimes of the registered tenants a query across tenants names (those with unsent alerts, with an
        upstream that cannot be used...): a loop walks the tenants that have something to do, never every tenant."""
        async with self.home.sessions() as s:
            found_ids = (await s.execute(tenant_ids.execution_options(**ALL_TENANTS))).scalars()
            wanted: list[int] = sorted({int(i) for i in found_ids})
        found = [await self.by_id(tenant_id) for tenant_id in wanted if tenant_id != DEFAULT_TENANT_ID]
        return [rt for rt in found if rt is not None]

    async def next_slice(self, every_seconds: float, period_seconds: float) -> list[Runtime]:
        """The next registered tenants of a walk that reaches each one once a ``period_seconds``, called every
        ``every_seconds``: a check every tenant needs now and then (the alerts' silences), spread over the period."""
        async with self.home.sessions() as s:
            total = (await s.execute(select(func.count()).select_from(Tenant).where(col(Tenant.enabled)))).scalar_one()
            size = math.ceil(total * every_seconds / period_seconds) if total else 0
            after = select(col(Tenant.id)).where(col(Tenant.enabled), col(Tenant.id) > self._cursor)
            ids = list((await s.execute(after.order_by(col(Tenant.id)).limit(size))).scalars())
        self._cursor = ids[-1] if ids and len(ids) == size else 0  # at the end: from the start next time
        found = [await self.by_id(tenant_id) for tenant_id in ids]
        return [rt for rt in found if rt is not None]

    async def forget_quiet(self, quiet_seconds: float = QUIET_SECONDS) -> int:
        """Close the runtimes of tenants not asked for in ``quiet_seconds`` (their next work makes them again)."""
        now = time.monotonic()
        quiet = [tenant_id for tenant_id, h in self._held.items() if now - h.served > quiet_seconds]
        for tenant_id in quiet:
            held = self._held.pop(tenant_id)
            await held.runtime.close()
        return len(quiet)

    def recheck(self) -> None:
        """Read each held tenant's registry row again at its next use rather than up to FRESH_SECONDS later: a change
        another process made (disabled, new settings) then reaches this one at once; a runtime it replaces is
        closed then, as any other."""
        for held in self._held.values():
            held.checked = -math.inf

    def held(self) -> list[Runtime]:
        """The tenants' runtimes made so far (the home runtime's loops walk them)."""
        return [h.runtime for h in self._held.values()]

    async def close(self) -> None:
        held, self._held = self._held, {}
        for h in held.values():
            await h.runtime.close()

    async def _runtime_of(self, tenant_id: int, tenant: Tenant | None) -> Runtime | None:
        async with self._lock:
            held = self._held.get(tenant_id)
            if tenant is None or not tenant.enabled:
                if held is not None:
                    del self._held[tenant_id]
                    await held.runtime.close()
                return None
            if held is not None and held.updated_at == tenant.updated_at:
                held.checked = time.monotonic()
                return self._served(held)
            settings = tenant_settings(self.home.settings, tenant, vault=self.home.vault)
            runtime = tenant_runtime(self.home, settings, tenant_id=tenant.id, slug=tenant.slug, name=tenant.name)
            fresh = self._held[tenant_id] = _Held(runtime, tenant.updated_at, time.monotonic())
            if held is not None:  # its settings changed: the old clients go
                await held.runtime.close()
            log.debug("hub.tenant.loaded", tenant=tenant.slug)
            return self._served(fresh)

    def _served(self, held: _Held) -> Runtime:
        held.served = time.monotonic()
        held.runtime.queue = self.home.queue  # set on home once Redis is wired, maybe after the tenant was made
        return held.runtime
