"""The database from the command line: `migrate`, and a session for a command that reads or operates."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import typer

from app.cli.startup import console, database_name, load_settings
from app.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession


def migrate(revision: str = typer.Argument("head")) -> None:
    """Bring the database schema up to date."""
    settings = load_settings()
    run_migrations(settings.effective_database_url, revision)
    console.print(f"database at {revision}: {database_name(settings)}", highlight=False)


def run_migrations(url: str, revision: str = "head", *, downgrade: bool = False) -> None:
    """Migrate ``url``'s database with the migrations shipped in the package (no alembic.ini needed: an installed
    wheel migrates from any folder; alembic.ini at the top of the source tree is for `alembic revision`)."""
    import logging
    from importlib.resources import files

    # Alembic tells every step (and, on import, every plugin) at INFO; the command says the one line that matters.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(files("app.migrations")))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["database_url"] = url
    cfg.attributes["configure_logger"] = False
    (command.downgrade if downgrade else command.upgrade)(cfg, revision)


def session(settings: Settings, tenant: str = "default") -> contextlib.AbstractAsyncContextManager[AsyncSession]:
    """A session of ``tenant`` (a slug) on its own engine, disposed of at the end: a command holds no pool beyond its
    one use."""
    from contextlib import asynccontextmanager

    from app.db.engine import make_engine, make_session_factory

    @asynccontextmanager
    async def scope() -> AsyncIterator[AsyncSession]:
        from app.cli.tenancy import tenant_id_of

        engine = make_engine(settings.effective_database_url)
        try:
            async with make_session_factory(engine, await tenant_id_of(engine, tenant))() as s:
                yield s
        finally:
            await engine.dispose()

    return scope()
