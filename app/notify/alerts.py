"""Alerts: what a person must fix, recorded in the database (raised here, silences watched here) and mailed once per
cause per window (app.notify.mail)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import structlog
from sqlalchemy import exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db import leases
from app.db.models import Alert, EnrolmentLink, EnrolmentStatus, Event, Run
from app.db.types import utcnow
from app.loops import pause
from app.notify.mail import AlertMailer
from app.runtime import Runtime
from app.settings import Settings

log = structlog.get_logger(__name__)
SILENCE_WALK_SECONDS = 3600  # each registered tenant's silences are checked once in this time

SILENCE_LEASE = "alerts.silence"


async def raise_alert(
    session: AsyncSession, *, cause: str, message: str, fix: str | None = None, event_id: int | None = None
) -> None:
    """Record something a person must fix; the caller commits. Texts must carry no secrets."""
    session.add(Alert(cause=cause, message=message, fix=fix, event_id=event_id))
    log.info("alert.raised", cause=cause, event_id=event_id, alert=message)


async def check_silence(session: AsyncSession, settings: Settings, *, now: datetime) -> None:
    """Alert when what should keep happening has stopped: Moodle events, periodic reconcile runs. Caller commits."""
    await _moodle_silence(session, settings, now)
    await _reconcile_silence(session, settings, now)


async def _moodle_silence(session: AsyncSession, settings: Settings, now: datetime) -> None:
    hours = settings.alerts.silence_hours
    inbound = settings.inbound_methods()
    # Without a Moodle credential no Moodle event can arrive: that silence is the setup, not a fault.
    if hours <= 0 or not (inbound["moodle.signature"] or inbound["moodle.token"]):
        return
    since = now - timedelta(hours=hours)
    heard = await session.scalar(select(exists().where(col(Event.source) == "moodle", col(Event.created_at) >= since)))
    if heard:
        return
    active, oldest = (
        await session.execute(
            select(func.count(), func.min(col(EnrolmentLink.created_at))).where(
                col(EnrolmentLink.status) == EnrolmentStatus.active
            )
        )
    ).one()
    # Only enrolments active for the whole window make the silence telling (not a fresh install's first ones).
    if not active or oldest is None or oldest >= since:
        return
    await _raise_once(
        session,
        "silence.moodle",
        since,
        message=f"No event from Moodle for {hours} hour(s), while {active} enrolment(s) are active.",
        fix="Check that Moodle still posts its events to this service (its webhook URL and credential) "
        "and that Moodle's cron is running.",
    )


async def _reconcile_silence(session: AsyncSession, settings: Settings, now: datetime) -> None:
    minutes = settings.reconcile.interval_minutes
    # The periodic reconcile skips runs while either side is unconfigured: that shows in the checks, not here.
    if minutes <= 0 or not (settings.moodle.configured and settings.coursesales.configured):
        return
    since = now - timedelta(minutes=3 * minutes)
    reconciles = (col(Run.kind) == "reconcile", col(Run.dry_run).is_(False))
    last = await session.scalar(select(func.max(col(Run.finished_at))).where(*reconciles, col(Run.status) == "done"))
    if last is not None and last >= since:
        return
    if last is None:
        # Nothing ever finished: count from the first run, else a fresh install would alert before its first run.
        first = await session.scalar(select(func.min(col(Run.created_at))).where(*reconciles))
        if first is None or first >= since:
            return
    when = f"the last one finished at {last:%Y-%m-%d %H:%M} UTC" if last else "none has finished yet"
    await _raise_once(
        session,
        "silence.reconcile",
        since,
        message=f"No reconcile run finished in the last {_span(3 * minutes)} (3 intervals); {when}.",
        fix="Check that a worker is running, and see GET /runs for the errors of the latest runs.",
    )


async def _raise_once(session: AsyncSession, cause: str, since: datetime, *, message: str, fix: str) -> None:
    """One unsent alert per silence at a time, and a reminder at most once per silence period."""
    known = await session.scalar(
        select(
            exists().where(col(Alert.cause) == cause, or_(col(Alert.sent_at).is_(None), col(Alert.created_at) >= since))
        )
    )
    if not known:
        await raise_alert(session, cause=cause, message=message, fix=fix)


def _span(minutes: int) -> str:
    return f"{minutes // 60} hour(s)" if minutes % 60 == 0 else f"{minutes} minute(s)"


async def run_forever(rt: Runtime, *, every_seconds: float = 60) -> None:
    """The alerts loop of one worker: watch for silences, then mail what is due; leases keep it to one at a time."""
    owner = f"alerts-{uuid.uuid4().hex[:12]}"
    # Each tenant's alerts go to its own recipients, through its own mail settings.
    mailers: dict[int, tuple[Runtime, AlertMailer]] = {}
    while True:
        # The home tenant every round; a registered one when it has unsent alerts, and for the silence checks in
        # turn, each once an hour: never every tenant every round.
        try:
            watched = [rt, *await rt.hub.next_slice(every_seconds, SILENCE_WALK_SECONDS)]
            mailing = [rt, *await rt.hub.with_work(select(col(Alert.tenant_id)).where(col(Alert.sent_at).is_(None)))]
        except Exception:  # the registry does not answer: the home tenant's alerts still go
            log.exception("alerts.tenants.failed")
            watched = mailing = [rt]
        for tenant in watched:
            try:
                await _watch(tenant, owner, lease_seconds=max(every_seconds * 2, 1))
            except Exception:  # the loop must outlive a database hiccup
                log.exception("alerts.silence.failed", tenant=tenant.slug)
        mailers = mailers_for(mailing, mailers)
        for tenant in mailing:
            try:
                await mailers[tenant.tenant_id][1].flush(owner=owner)
            except Exception:
                log.exception("alerts.flush.failed", tenant=tenant.slug)
        await pause(every_seconds)


def mailers_for(
    mailing: list[Runtime], kept: dict[int, tuple[Runtime, AlertMailer]]
) -> dict[int, tuple[Runtime, AlertMailer]]:
    """The mailer of each tenant with alerts to send this round: the one kept while its runtime is the same, a new
    one for a new runtime (its settings changed). A tenant with nothing to send is let go: holding its mailer held
    its runtime, which the hub closes after a few quiet minutes, for as long as the worker ran."""
    fresh: dict[int, tuple[Runtime, AlertMailer]] = {}
    for tenant in mailing:
        held = kept.get(tenant.tenant_id)
        if held is None or held[0] is not tenant:
            held = (tenant, AlertMailer(tenant.settings.alerts, sessions=tenant.sessions))
        fresh[tenant.tenant_id] = held
    return fresh


async def _watch(rt: Runtime, owner: str, *, lease_seconds: float) -> None:
    async with rt.sessions() as s:
        # Held across rounds by one worker: two watchers could each raise the same silence alert.
        if not await leases.acquire(s, SILENCE_LEASE, owner, lease_seconds):
            await s.rollback()
            return
        await check_silence(s, rt.settings, now=utcnow())
        await s.commit()
