"""The probe: while an upstream cannot be used, ask it every few seconds whether it can again; when it can, the
work that waited for it is queued at once (no replay). One probe per upstream at a time across all workers."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from sqlalchemy import select
from sqlmodel import col

from app.checks import RECONCILE_ONLY, REQUIRED_FUNCTIONS
from app.coursesales.errors import CourseSalesError
from app.db import leases
from app.db.models import UpstreamState
from app.db.tenancy import get_by_key
from app.db.types import utcnow
from app.jobs.sweeper import release_held
from app.loops import pause
from app.moodle.errors import MoodleError
from app.notify.alerts import raise_alert
from app.runtime import Runtime
from app.sync import upstreams

log = structlog.get_logger(__name__)


async def probe(rt: Runtime, name: str) -> upstreams.Fault | None:
    """Ask one upstream directly; the fault it still shows, or None when it can be used."""
    try:
        if name == upstreams.MOODLE:
            info = await rt.moodle.site_info()
            have = {f.get("name") for f in info.get("functions", [])}
            missing = [f for f in REQUIRED_FUNCTIONS if f not in have and f not in RECONCILE_ONLY]
            if missing:
                reason = f"functions missing from the token's external service: {', '.join(missing)}"
                return upstreams.Fault(name, upstreams.AUTH_FAILED, f"Moodle refuses the token: {reason}")
        else:
            await rt.coursesales.check_login()
    except (MoodleError, CourseSalesError) as exc:
        fault = upstreams.fault_of(exc)
        return fault or upstreams.Fault(name, upstreams.UNAVAILABLE, f"{name} answers the probe with: {exc}")
    return None


async def probe_all(rt: Runtime, owner: str, *, force: bool = False) -> dict[str, dict[str, Any]]:
    """Probe each configured upstream that is not known to be usable (``force``: each configured one); record what
    it says, release the waiting work of one that recovered, and alert once on a long wait. Returns the report."""
    configured = {
        upstreams.MOODLE: rt.settings.moodle.configured,
        upstreams.COURSESALES: rt.settings.coursesales.configured,
    }
    async with rt.sessions() as s:
        states = await upstreams.load(s)
    probed = False
    for name, ok in configured.items():
        row = states.get(name)
        if not ok or (not force and (row is None or row.state == upstreams.OK)):
            continue
        async with rt.sessions() as s:
            if not await leases.acquire(s, f"probe:{name}", owner, _every(rt, name) * 3):
                await s.rollback()
                continue
            await s.commit()
        probed = True
        try:
            fault = await probe(rt, name)
        finally:
            async with rt.sessions() as s:
                await leases.release(s, f"probe:{name}", owner)
                await s.commit()
        async with rt.sessions() as s:
            if fault is None:
                if await upstreams.mark_ok(s, name):
                    log.info("upstream.usable", upstream=name)
                    await raise_alert(s, cause=f"upstream.{name}", message=f"{name} can be used again: work resumed")
            else:
                await upstreams.mark(s, fault)
                row = await get_by_key(s, upstreams.UpstreamState, name)
                limit = rt.settings.alerts.waiting_minutes * 60
                if row is not None and not row.alerted_long and (utcnow() - row.since).total_seconds() > limit:
                    row.alerted_long = True
                    await raise_alert(
                        s, cause=f"upstream.{name}.waiting",
                        message=f"{fault.reason}, for more than {rt.settings.alerts.waiting_minutes} minutes: work waits",
                        fix=upstreams.FIX.get((name, fault.state)),
                    )  # fmt: skip
            await s.commit()
        rt.upstream_states.forget()
        if fault is None:
            await release_held(rt.sessions, rt.queue, f"{name} usable again")
    if probed:  # the idle loop (everything usable) reads the states once a round, not twice
        async with rt.sessions() as s:
            states = await upstreams.load(s)
    return upstreams.report(rt.settings, states)


def _every(rt: Runtime, name: str) -> float:
    return rt.settings.moodle.probe_seconds if name == upstreams.MOODLE else rt.settings.coursesales.probe_seconds


async def run_forever(rt: Runtime) -> None:
    """The probe loop of one worker (the lease keeps it to one probe per upstream at a time)."""
    owner = f"probe-{uuid.uuid4().hex[:12]}"
    while True:
        try:
            # The home tenant every round (as before tenants); a registered one while an upstream of its own cannot
            # be used. Runtimes of tenants quiet for a while are closed here too.
            tenants = [
                rt,
                *await rt.hub.with_work(
                    select(col(UpstreamState.tenant_id)).where(col(UpstreamState.state) != upstreams.OK)
                ),
            ]
            await rt.hub.forget_quiet()
        except Exception:  # the registry does not answer: the home tenant is still probed
            log.exception("probe.tenants.failed")
            tenants = [rt]
        for tenant in tenants:  # each tenant's upstreams, states and held work are its own
            try:
                await probe_all(tenant, owner)
            except Exception:  # the loop must outlive a database or Redis hiccup
                log.exception("probe.failed", tenant=tenant.slug)
        await pause(min(rt.settings.moodle.probe_seconds, rt.settings.coursesales.probe_seconds))
