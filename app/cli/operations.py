"""The operator's commands on events and contacts: list, replay, resolve, pause, resume, do-not-sync."""

from __future__ import annotations

import asyncio

import typer

from app.cli.database import session
from app.cli.startup import console, migrated_settings, out
from app.cli.tenancy import tenant_option
from app.db.models import EventStatus as EventStatusChoice
from app.settings import Settings


def events(
    status: EventStatusChoice = typer.Option(None, "--status", help="only events in this status"),
    kind: str = typer.Option(None, "--kind", max=64),
    limit: int = typer.Option(30, "--limit", min=1, max=1000),
    tenant: str = tenant_option(),
) -> None:
    """List events, newest first."""
    asyncio.run(_events(migrated_settings(), status, kind, limit, tenant))


def replay(event_id: int, note: str = typer.Option(None, "--note"), tenant: str = tenant_option()) -> None:
    """Run a finished event again (never a second effect)."""
    asyncio.run(_operate(migrated_settings(), "replay", event_id=event_id, note=note, tenant=tenant))


def resolve(
    event_id: int,
    note: str = typer.Option(..., "--note", help="what you found, kept with the event"),
    tenant: str = tenant_option(),
) -> None:
    """Close a needs_review or failed event without running it again."""
    asyncio.run(_operate(migrated_settings(), "resolve", event_id=event_id, note=note, tenant=tenant))


def pause(note: str = typer.Option(None, "--note"), tenant: str = tenant_option()) -> None:
    """Stop processing (events are still accepted and kept), e.g. during a Moodle upgrade."""
    asyncio.run(_operate(migrated_settings(), "pause", note=note, tenant=tenant))


def resume(note: str = typer.Option(None, "--note"), tenant: str = tenant_option()) -> None:
    """Start processing again."""
    asyncio.run(_operate(migrated_settings(), "resume", note=note, tenant=tenant))


def do_not_sync(
    contact: str = typer.Argument(..., help="a contact id, a username, or a key (contact:1234)"),
    undo: bool = typer.Option(False, "--undo", help="sync the contact again"),
    note: str = typer.Option(None, "--note", help="why (kept in the audit trail)"),
    tenant: str = tenant_option(),
) -> None:
    """Take a contact out of the sync (an erasure request): nothing is made for it in Moodle again."""
    action = "sync-again" if undo else "do-not-sync"
    asyncio.run(_operate(migrated_settings(), action, contact=contact, note=note, tenant=tenant))


async def _events(
    settings: Settings, status: EventStatusChoice | None, kind: str | None, limit: int, tenant: str
) -> None:
    from rich.table import Table
    from sqlalchemy import select
    from sqlmodel import col

    from app.db.models import Event

    async with session(settings, tenant) as s:
        query = select(Event).order_by(col(Event.id).desc()).limit(limit)
        if status:
            query = query.where(col(Event.status) == status.value)
        if kind:
            query = query.where(col(Event.kind) == kind)
        rows = list((await s.execute(query)).scalars())
    table = Table()
    for column in ("id", "source", "kind", "status", "attempts", "created", "waiting for / last error"):
        table.add_column(column)
    for e in rows:
        table.add_row(
            str(e.id),
            e.source,
            e.kind,
            e.status,
            str(e.attempts),
            f"{e.created_at:%Y-%m-%d %H:%M}",
            (e.waiting_for or e.last_error or "")[:80],
        )
    out.print(table)


async def _operate(
    settings: Settings,
    action: str,
    *,
    event_id: int | None = None,
    note: str | None = None,
    contact: str = "",
    tenant: str = "default",
) -> None:
    import getpass

    from app.sync import operations

    actor = f"cli:{getpass.getuser()}"
    was_paused = False
    async with session(settings, tenant) as s:
        was_paused = action == "resume" and await operations.paused(s) is not None
        try:
            if action == "replay":
                assert event_id is not None, "the replay command passes its event id"
                await operations.replay(s, event_id, actor=actor, note=note)
            elif action == "resolve":
                assert event_id is not None, "the resolve command passes its event id"
                await operations.resolve(s, event_id, actor=actor, note=note or "")
            elif action == "pause":
                await operations.pause(s, actor=actor, note=note)
            elif action == "do-not-sync":
                await operations.do_not_sync(s, contact, actor=actor, note=note)
            elif action == "sync-again":
                await operations.sync_again(s, contact, actor=actor, note=note)
            else:
                await operations.resume(s, actor=actor, note=note)
        except operations.OperationError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
        await s.commit()
    if was_paused:
        await _release_held(settings, tenant)
    # A replayed event is queued by the sweeper within a minute; no Redis needed here.
    console.print(
        f"{action} done" + (f" (event {event_id})" if event_id else "") + (f" ({contact})" if contact else "")
    )


async def _release_held(settings: Settings, tenant: str) -> None:
    """Queue the work the pause held, now (the sweeper would take up to its interval)."""
    from app.cli.tenancy import tenant_id_of
    from app.db.engine import make_engine, make_session_factory
    from app.jobs.queue import Queue, connect
    from app.jobs.redis import redis_settings
    from app.jobs.sweeper import release_held

    # The queue and the database are all it needs (no upstream clients, no secret key).
    engine = make_engine(settings.effective_database_url)
    queue = Queue(connect(redis_settings(settings)))
    try:
        sessions = make_session_factory(engine, await tenant_id_of(engine, tenant))
        count = await release_held(sessions, queue, "resumed")
    finally:
        await queue.close()
        await engine.dispose()
    console.print(f"{count} held event(s) queued")
