"""Alert emails through a real SMTP server (aiosmtpd): one per cause per window, nothing lost, one flusher."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import structlog
from pydantic import SecretStr
from sqlalchemy import select, update
from structlog.testing import capture_logs

from app.db import leases
from app.db.models import Alert, EnrolmentLink, Event, Run
from app.db.types import utcnow
from app.notify.alerts import AlertMailer, check_silence, raise_alert, run_forever
from app.notify.debuglog import setup_debug_log
from app.runtime import Runtime
from tests.smtp_inbox import Inbox

FIX = "Correct the contact in CourseSales, then replay the event."


def mailer(rt: Runtime) -> AlertMailer:
    return AlertMailer(rt.settings.alerts, sessions=rt.sessions)


async def alert(rt: Runtime, cause: str = "event.failed", **kw: Any) -> None:
    kw.setdefault("message", "Moodle refused the user: invalid email")
    async with rt.sessions() as s:
        await raise_alert(s, cause=cause, **kw)
        await s.commit()


async def alerts(rt: Runtime) -> list[Alert]:
    async with rt.sessions() as s:
        return list((await s.execute(select(Alert).order_by(Alert.id))).scalars())


async def age_sent(rt: Runtime, by: timedelta) -> None:
    """Move every sent email back in time: the window passes without waiting for it."""
    async with rt.sessions() as s:
        for row in await s.execute(select(Alert).where(Alert.sent_at.is_not(None))):
            row[0].sent_at -= by
        await s.commit()


def subject(message: EmailMessage) -> str:
    # Python folds a long subject that starts with "[" right after "Subject:"; mail readers drop the blank.
    return str(message["Subject"]).strip()


def body(message: EmailMessage) -> str:
    return message.get_content()  # type: ignore[no-any-return]


async def test_three_failures_make_one_email(runtime: Runtime, smtp: Inbox) -> None:
    for event_id in (101, 102, 103):
        await alert(runtime, event_id=event_id, fix=FIX)
    assert await mailer(runtime).flush(owner="w1") == 1
    (message,) = smtp.messages
    assert subject(message) == "[coursesales-moodle-sync] event.failed: 3 problem(s) need a person"
    assert message["From"] == "sync@example.com"
    assert message["To"] == "ops@example.com, it@example.com"
    text = body(message)
    assert "Event id(s): 101, 102, 103" in text
    assert text.count("Moodle refused the user: invalid email") == 1, "one message, listed once"
    assert text.count(FIX) == 1
    assert all(a.sent_at is not None for a in await alerts(runtime))


async def test_one_email_per_cause_per_window(runtime: Runtime, smtp: Inbox) -> None:
    await alert(runtime, event_id=1)
    assert await mailer(runtime).flush(owner="w1") == 1
    await alert(runtime, event_id=2, message="Moodle refused the user: duplicate username")
    assert await mailer(runtime).flush(owner="w1") == 0, "inside the window: waits"
    assert len(smtp.messages) == 1
    assert [a.sent_at is None for a in await alerts(runtime)] == [False, True], "waiting, not lost"

    await age_sent(runtime, timedelta(minutes=runtime.settings.alerts.window_minutes + 1))
    assert await mailer(runtime).flush(owner="w1") == 1
    latest = body(smtp.messages[-1])
    assert "duplicate username" in latest and "Event id(s): 2" in latest
    assert "invalid email" not in latest, "what was mailed is not mailed again"
    assert subject(smtp.messages[-1]).endswith("event.failed: 1 problem(s) need a person")


async def test_two_causes_two_emails(runtime: Runtime, smtp: Inbox) -> None:
    await alert(runtime, event_id=7)
    await alert(runtime, "category.unmapped", message="Course category 12 (First Aid) has no Moodle category")
    await alert(runtime, "category.unmapped", message="Course category 12 (First Aid) has no Moodle category")
    assert await mailer(runtime).flush(owner="w1") == 2
    subjects = sorted(subject(m) for m in smtp.messages)
    assert subjects == [
        "[coursesales-moodle-sync] category.unmapped: 2 problem(s) need a person",
        "[coursesales-moodle-sync] event.failed: 1 problem(s) need a person",
    ]
    unmapped = next(m for m in smtp.messages if "category.unmapped" in subject(m))
    assert body(unmapped).count("has no Moodle category") == 1


async def test_smtp_down_loses_nothing(runtime: Runtime, smtp: Inbox) -> None:
    await alert(runtime, event_id=5, fix=FIX)
    smtp.stop()
    runtime.settings.alerts.smtp_username = "mailer"
    runtime.settings.alerts.smtp_password = SecretStr("smtp-password-never-logged")
    with capture_logs() as logs:
        assert await mailer(runtime).flush(owner="w1") == 0
    (failure,) = [e for e in logs if e["event"] == "alerts.smtp.failed"]
    assert failure["cause"] == "event.failed" and failure["port"] == smtp.port
    assert "smtp-password-never-logged" not in json.dumps(logs, default=str)
    assert [a.sent_at for a in await alerts(runtime)] == [None]

    smtp.start()
    runtime.settings.alerts.smtp_username, runtime.settings.alerts.smtp_password = "", None  # aiosmtpd has no AUTH
    assert await mailer(runtime).flush(owner="w1") == 1
    (message,) = smtp.messages
    assert "Event id(s): 5" in body(message)


async def test_refused_email_keeps_alerts_and_other_causes_go(runtime: Runtime, smtp: Inbox) -> None:
    async def refuse_event_failed(message: EmailMessage, **kw: Any) -> Any:
        if "event.failed" in message["Subject"]:
            raise RuntimeError("552 message refused")
        return await aiosmtplib.send(message, **kw)

    await alert(runtime, event_id=1)
    await alert(runtime, "moodle.token", message="Moodle refused the token")
    sender = AlertMailer(runtime.settings.alerts, sessions=runtime.sessions, send=refuse_event_failed)
    assert await sender.flush(owner="w1") == 1
    assert [subject(m) for m in smtp.messages] == ["[coursesales-moodle-sync] moodle.token: 1 problem(s) need a person"]
    assert {a.cause: a.sent_at is None for a in await alerts(runtime)} == {"event.failed": True, "moodle.token": False}


async def test_unconfigured_smtp_keeps_alerts(runtime: Runtime) -> None:
    runtime.settings.alerts.smtp_host = ""
    await alert(runtime, event_id=1)
    await alert(runtime, "moodle.token", message="Moodle refused the token")
    with capture_logs() as logs:
        assert await mailer(runtime).flush(owner="w1") == 0
    warnings = [e for e in logs if e["event"] == "alerts.smtp.unconfigured"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
    assert warnings[0]["pending"] == 2 and warnings[0]["causes"] == ["event.failed", "moodle.token"]
    assert all(a.sent_at is None for a in await alerts(runtime))


async def test_one_flush_at_a_time(runtime: Runtime, smtp: Inbox) -> None:
    await alert(runtime, event_id=1)
    async with runtime.sessions() as s:
        assert await leases.acquire(s, "alerts.flush", "other-worker", 60)
        await s.commit()
    assert await mailer(runtime).flush(owner="w1") == 0
    assert smtp.messages == []
    async with runtime.sessions() as s:
        await leases.release(s, "alerts.flush", "other-worker")
        await s.commit()
    assert await mailer(runtime).flush(owner="w1") == 1
    assert await mailer(runtime).flush(owner="w2") == 0, "the lease is freed; the window holds the rest"


async def add(rt: Runtime, *rows: Any) -> None:
    async with rt.sessions() as s:
        s.add_all(rows)
        await s.commit()


async def silence(rt: Runtime, **kw: Any) -> list[Alert]:
    async with rt.sessions() as s:
        await check_silence(s, rt.settings, now=kw.get("now", utcnow()))
        await s.commit()
    return [a for a in await alerts(rt) if a.cause.startswith("silence.")]


def enrolment(**kw: Any) -> EnrolmentLink:
    return EnrolmentLink(moodle_user_id=1, moodle_course_id=2, course_date_id=3, **kw)


def moodle_event(created_at: Any) -> Event:
    return Event(source="moodle", kind="course.completed", dedupe_key="m-1", body_hash="x", created_at=created_at)


async def test_moodle_silence(runtime: Runtime) -> None:
    runtime.settings.reconcile.interval_minutes = 0
    hours = runtime.settings.alerts.silence_hours
    assert await silence(runtime) == [], "no enrolments: nothing to hear about"
    await add(runtime, enrolment(created_at=utcnow() - timedelta(hours=hours + 1)))
    await add(runtime, moodle_event(utcnow() - timedelta(hours=hours + 2)))
    (raised,) = await silence(runtime)
    assert raised.cause == "silence.moodle" and f"{hours} hour(s)" in raised.message
    assert len(await silence(runtime)) == 1, "one unsent alert, not one per check"

    async with runtime.sessions() as s:
        await s.execute(update(Event).values(created_at=utcnow() - timedelta(hours=1)))
        await s.execute(update(Alert).values(sent_at=utcnow() - timedelta(hours=hours + 1)))
        await s.commit()
    assert len(await silence(runtime)) == 1, "heard from Moodle within the window"


async def test_moodle_silence_needs_an_old_enrolment_and_a_moodle_credential(runtime: Runtime) -> None:
    runtime.settings.reconcile.interval_minutes = 0
    await add(runtime, enrolment(created_at=utcnow() - timedelta(hours=1)))
    assert await silence(runtime) == [], "enrolled an hour ago: Moodle had no time to be silent"
    later = utcnow() + timedelta(hours=runtime.settings.alerts.silence_hours)
    runtime.settings.webhooks.moodle_token = None
    assert await silence(runtime, now=later) == [], "no Moodle credential: no Moodle event can come"
    runtime.settings.alerts.silence_hours = 0
    assert await silence(runtime, now=later) == [], "switched off"


async def test_reconcile_silence(runtime: Runtime) -> None:
    runtime.settings.alerts.silence_hours = 0
    runtime.settings.reconcile.interval_minutes = 60
    now = utcnow()
    await add(runtime, Run(status="failed", created_at=now - timedelta(hours=1), finished_at=now))
    assert await silence(runtime) == [], "runs began an hour ago: not yet 3 intervals"
    await add(runtime, Run(status="done", created_at=now - timedelta(hours=5), finished_at=now - timedelta(hours=4)))
    (raised,) = await silence(runtime)
    assert raised.cause == "silence.reconcile" and "3 hour(s)" in raised.message
    assert len(await silence(runtime)) == 1, "one unsent alert, not one per check"
    await add(runtime, Run(status="done", dry_run=True, finished_at=now))
    assert len(await silence(runtime)) == 1, "a dry run changes nothing, so it does not count"

    await add(runtime, Run(status="done", finished_at=now - timedelta(minutes=30)))
    async with runtime.sessions() as s:
        await s.execute(update(Alert).values(sent_at=now, created_at=now - timedelta(hours=4)))
        await s.commit()
    assert len(await silence(runtime)) == 1, "a run finished recently: no new alert"
    runtime.settings.reconcile.interval_minutes = 0
    assert len(await silence(runtime, now=now + timedelta(days=1))) == 1, "switched off"


async def test_run_forever_keeps_trying_until_mail_goes_out(runtime: Runtime, smtp: Inbox) -> None:
    runtime.settings.alerts.silence_hours = 0
    runtime.settings.reconcile.interval_minutes = 0
    await alert(runtime, event_id=9)
    smtp.stop()
    with capture_logs() as logs:
        task = asyncio.create_task(run_forever(runtime, every_seconds=0.05))
        try:
            await wait_for(lambda: any(e["event"] == "alerts.smtp.failed" for e in logs))
            smtp.start()
            await wait_for(lambda: len(smtp.messages) == 1)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert "Event id(s): 9" in body(smtp.messages[0])


async def wait_for(condition: Callable[[], bool], *, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, "condition not met before the deadline"
        await asyncio.sleep(0.02)


def test_debug_log_file_gets_structlog_and_stdlib_lines(tmp_path: Path) -> None:
    root, saved = logging.getLogger(), structlog.get_config()
    before = list(root.handlers)
    path = tmp_path / "debug.log"
    setup_debug_log(None)
    assert root.handlers == before, "no path: nothing added"
    try:
        setup_debug_log(str(path))
        structlog.get_logger("test").warning("debuglog.check", detail="from structlog")
        logging.getLogger("some.library").warning("from stdlib")
    finally:
        for handler in set(root.handlers) - set(before):
            root.removeHandler(handler)
            handler.close()
        structlog.configure(**saved)
    text = path.read_text()
    assert "debuglog.check" in text and "from structlog" in text and "from stdlib" in text


def test_the_alerts_loop_lets_go_of_a_tenant_with_nothing_to_send() -> None:
    """A tenant's mailer (and the runtime it holds) is kept while the tenant has alerts to send, made anew when its
    runtime is a new one, and dropped once it has none: the hub can then close a quiet tenant's runtime for good."""
    from types import SimpleNamespace
    from typing import cast

    from app.notify.alerts import mailers_for
    from app.runtime import Runtime
    from app.settings import Settings

    def tenant(tenant_id: int) -> Runtime:
        return cast(Runtime, SimpleNamespace(tenant_id=tenant_id, settings=Settings(), sessions=None))

    home, beta = tenant(0), tenant(7)
    first = mailers_for([home, beta], {})
    assert set(first) == {0, 7} and first[7][0] is beta
    again = mailers_for([home, beta], first)
    assert again[0][1] is first[0][1] and again[7][1] is first[7][1], "kept while the runtime is the same"
    beta_anew = tenant(7)
    renewed = mailers_for([home, beta_anew], again)
    assert renewed[7][0] is beta_anew and renewed[7][1] is not again[7][1], "a new runtime gets a new mailer"
    assert set(mailers_for([home], renewed)) == {0}, "nothing to send: let go"
