"""Alert emails: the alerts of one cause, mailed together at most once per window, by one worker at a time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any

import aiosmtplib
import structlog
from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased
from sqlmodel import col

from app.db import leases
from app.db.models import Alert
from app.db.types import utcnow
from app.settings import AlertsSettings

log = structlog.get_logger(__name__)

PRODUCT = "coursesales-moodle-sync"
LEASE = "alerts.flush"
# Renewed before each email, so it only has to outlast one SMTP conversation.
LEASE_SECONDS = 300
SMTP_TIMEOUT = 60
# A cause can gather thousands of alerts between two emails: the email stays readable, the table has them all.
MAX_MESSAGES = 50
MAX_IDS = 100
MARK_CHUNK = 500

Send = Callable[..., Awaitable[Any]]


class AlertMailer:
    """Mails pending alerts: one email per cause per window, listing every alert of the cause since the last."""

    def __init__(
        self, settings: AlertsSettings, *, sessions: async_sessionmaker[AsyncSession], send: Send | None = None
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self._send = send or aiosmtplib.send

    async def flush(self, *, owner: str) -> int:
        """Send what is due; returns the number of emails sent. Unsent alerts wait for the next flush."""
        if not self.settings.enabled:
            await self._warn_unconfigured()
            return 0
        if not await self._hold(owner):
            return 0
        try:
            return await self._send_due(owner)
        finally:
            async with self.sessions() as s:
                await leases.release(s, LEASE, owner)
                await s.commit()

    async def _hold(self, owner: str) -> bool:
        async with self.sessions() as s:
            mine = await leases.acquire(s, LEASE, owner, LEASE_SECONDS)
            await s.commit()
            return mine

    async def _send_due(self, owner: str) -> int:
        sent = 0
        for cause in await self._due_causes():
            # Ours may have expired during a slow SMTP server; then another worker is flushing.
            if not await self._hold(owner):
                break
            alerts = await self._pending(cause)
            if not alerts:
                continue
            try:
                await self._deliver(compose(self.settings, cause, alerts))
            except OSError as exc:  # refused, timed out, dropped: the next cause would fail the same way
                self._log_failure(cause, exc)
                break
            except Exception as exc:  # this email was refused (size, recipients, auth): try the other causes
                self._log_failure(cause, exc)
                continue
            await self._mark_sent([a.id for a in alerts if a.id is not None])
            log.info("alerts.sent", cause=cause, alerts=len(alerts))
            sent += 1
        return sent

    async def _due_causes(self) -> list[str]:
        """Causes with unsent alerts and no email within the window."""
        cutoff = utcnow() - timedelta(minutes=self.settings.window_minutes)
        recent = aliased(Alert)
        in_window = exists().where(col(recent.cause) == col(Alert.cause), col(recent.sent_at) >= cutoff)
        async with self.sessions() as s:
            rows = await s.execute(
                select(col(Alert.cause))
                .where(col(Alert.sent_at).is_(None), ~in_window)
                .distinct()
                .order_by(col(Alert.cause))
            )
            return list(rows.scalars())

    async def _pending(self, cause: str) -> list[Alert]:
        async with self.sessions() as s:
            rows = await s.execute(
                select(Alert).where(col(Alert.cause) == cause, col(Alert.sent_at).is_(None)).order_by(col(Alert.id))
            )
            return list(rows.scalars())

    async def _deliver(self, message: EmailMessage) -> None:
        cfg = self.settings
        username = cfg.smtp_username or None
        password = cfg.smtp_password.get_secret_value() if cfg.smtp_password else ""
        await self._send(
            message,
            hostname=cfg.smtp_host,
            port=cfg.smtp_port,
            start_tls=cfg.smtp_tls == "starttls",  # False for "none" also stops aiosmtplib upgrading on its own
            use_tls=cfg.smtp_tls == "tls",
            username=username,
            password=(password or None) if username else None,
            timeout=SMTP_TIMEOUT,
        )

    async def _mark_sent(self, ids: Sequence[int]) -> None:
        # By id, not by cause: an alert raised while the email was on its way was not in it.
        now = utcnow()
        async with self.sessions() as s:
            for start in range(0, len(ids), MARK_CHUNK):
                chunk = ids[start : start + MARK_CHUNK]
                await s.execute(
                    update(Alert)
                    .where(col(Alert.id).in_(chunk))
                    .values(sent_at=now)
                    .execution_options(synchronize_session=False)
                )
            await s.commit()

    def _log_failure(self, cause: str, exc: BaseException) -> None:
        log.error(
            "alerts.smtp.failed",
            cause=cause,
            host=self.settings.smtp_host,
            port=self.settings.smtp_port,
            error=f"{type(exc).__name__}: {exc}",
        )

    async def _warn_unconfigured(self) -> None:
        async with self.sessions() as s:
            rows = (
                await s.execute(
                    select(col(Alert.cause), func.count())
                    .where(col(Alert.sent_at).is_(None))
                    .group_by(col(Alert.cause))
                )
            ).all()
        if rows:
            log.warning(
                "alerts.smtp.unconfigured",
                pending=sum(n for _, n in rows),
                causes=sorted(c for c, _ in rows),
                hint="set SYNC_ALERTS__SMTP_HOST, SYNC_ALERTS__SENDER and SYNC_ALERTS__RECIPIENTS",
            )


def compose(settings: AlertsSettings, cause: str, alerts: Sequence[Alert]) -> EmailMessage:
    """The plain-text email for one cause."""
    message = EmailMessage()
    message["Subject"] = f"[{PRODUCT}] {cause}: {len(alerts)} problem(s) need a person"
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.recipients)
    message["Date"] = formatdate(usegmt=True)
    # make_msgid() would look up this host's FQDN, which can hang on a bad resolver.
    message["Message-ID"] = make_msgid(domain=parseaddr(settings.sender)[1].rpartition("@")[2] or "localhost")
    message.set_content(_body(cause, alerts, settings.window_minutes))
    return message


def _body(cause: str, alerts: Sequence[Alert], window_minutes: int) -> str:
    # Same message, listed once: its event ids and fixes gathered under it (dicts keep first-seen order).
    groups: dict[str, tuple[dict[int, None], dict[str, None]]] = {}
    for alert in alerts:
        ids, fixes = groups.setdefault(alert.message, ({}, {}))
        if alert.event_id is not None:
            ids[alert.event_id] = None
        if alert.fix:
            fixes[alert.fix] = None
    lines = [f"{len(alerts)} problem(s) of cause {cause} need a person.", ""]
    for number, (text, (ids, fixes)) in enumerate(list(groups.items())[:MAX_MESSAGES], 1):
        lines.append(f"{number}. " + text.replace("\n", "\n   "))
        if ids:
            lines.append(f"   Event id(s): {_ids(list(ids))}")
        lines.extend(f"   Fix: {fix}" for fix in fixes)
        lines.append("")
    if len(groups) > MAX_MESSAGES:
        lines += [f"... and {len(groups) - MAX_MESSAGES} more message(s), not shown here: see the alerts table.", ""]
    lines.append(f"-- {PRODUCT}: alerts of one cause are mailed together, at most once every {window_minutes} minutes.")
    return "\n".join(lines) + "\n"


def _ids(ids: list[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:MAX_IDS])
    return shown + (f" and {len(ids) - MAX_IDS} more" if len(ids) > MAX_IDS else "")
