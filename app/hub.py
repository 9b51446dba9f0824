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
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import select
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


@dataclass
class _Held:
    runtime: Runtime
    updated_at: datetime
    checked: float  # time.monotonic() of the last read of its registry row


class Hub:
    def __init__(self, home: Runtime) -> None:
        self.home = home
        self._held: dict[int, _Held] = {}
        self._lock = asyncio.Lock()
        self.intake = IntakeLimit()  # each registered tenant's deliveries a second (hub.intake_per_second)

    async def by_id(self, tenant_id: int) -> Runtime | None:
        """The tenant's runtime; None when it is not registered or is disabled (nothing is done for it)."""
        if tenant_id == DEFAULT_TENANT_ID:
            return self.home
        held = self._held.get(tenant_id)
        if held is not None and time.monotonic() - held.checked < FRESH_SECONDS:
            return self._served(held.runtime)
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
                return self._served(held.runtime), True
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

    async def registered(self) -> list[Runtime]:
        """The runtime of every enabled registered tenant (the loops of the home runtime walk them after its own)."""
        async with self.home.sessions() as s:
            ids = (
                await s.execute(select(col(Tenant.id)).where(col(Tenant.enabled)).order_by(col(Tenant.id)))
            ).scalars()
            wanted = list(ids)
        found = [await self.by_id(tenant_id) for tenant_id in wanted]
        return [rt for rt in found if rt is not None]

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
                return self._served(held.runtime)
            settings = tenant_settings(self.home.settings, tenant, vault=self.home.vault)
            runtime = tenant_runtime(self.home, settings, tenant_id=tenant.id, slug=tenant.slug)
            self._held[tenant_id] = _Held(runtime, tenant.updated_at, time.monotonic())
            if held is not None:  # its settings changed: the old clients go
                await held.runtime.close()
            log.info("hub.tenant.loaded", tenant=tenant.slug)
            return self._served(runtime)

    def _served(self, runtime: Runtime) -> Runtime:
        runtime.queue = self.home.queue  # set on home once Redis is wired, which may be after the tenant was made
        return runtime
