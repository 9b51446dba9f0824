"""`moodle-sync rotate-key`: finish a rotation of SYNC_SECRET_KEY (README, "Rotating SYNC_SECRET_KEY")."""

from __future__ import annotations

import asyncio
import getpass

import typer

from app.cli.startup import console, migrated_settings
from app.settings import Settings, secret


def rotate_key() -> None:
    """Wrap the keyring under SYNC_SECRET_KEY alone and move every encrypted value to a fresh key; then
    SYNC_SECRET_KEY_PREVIOUS can go. Safe to run again; a crash leaves the previous state whole."""
    settings = migrated_settings()
    if not secret(settings.secret_key):
        console.print("[red]SYNC_SECRET_KEY is not set[/red]: set the new key (and the old one in "
                      "SYNC_SECRET_KEY_PREVIOUS)")  # fmt: skip
        raise typer.Exit(2)
    raise typer.Exit(asyncio.run(_rotate(settings)))


async def _rotate(settings: Settings) -> int:
    from app.db.engine import make_engine, make_session_factory
    from app.sync import keyring
    from app.sync.operations import audit

    engine = make_engine(settings.effective_database_url)
    try:
        async with make_session_factory(engine)() as session:
            try:
                done = await keyring.rotate(
                    session, str(secret(settings.secret_key)), secret(settings.secret_key_previous)
                )
            except keyring.KeyringError as exc:
                console.print(f"[red]{exc}[/red]", highlight=False)
                return 1
            audit(
                session,
                actor=f"cli:{getpass.getuser()}",
                action="key.rotate",
                note=f"{done.re_encrypted} values re-encrypted",
            )
            await session.commit()
    finally:
        await engine.dispose()
    console.print(f"keyring wrapped under SYNC_SECRET_KEY; {done.re_encrypted} encrypted values moved to a fresh key. "
                  "SYNC_SECRET_KEY_PREVIOUS can be removed now (restart the service without it).")  # fmt: skip
    return 0
