"""``--tenant``: which tenant a command acts on. ``default`` (the file's configuration) unless a registered tenant's
slug is given; the command then reads and writes that tenant's rows only (app.db.tenancy) and, where it calls Moodle
or CourseSales, uses that tenant's settings and credentials (app.hub)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import typer

from app.cli.startup import console
from app.db.tenants import DEFAULT_SLUG, DEFAULT_TENANT_ID

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from app.runtime import Runtime
    from app.settings import Settings

TENANT_HELP = "the tenant to act on: a registered tenant's slug (default: the file's configuration)"


def tenant_option() -> Any:
    return typer.Option(DEFAULT_SLUG, "--tenant", help=TENANT_HELP, max=40)


async def tenant_id_of(engine: AsyncEngine, slug: str) -> int:
    """The tenant's id (0 for ``default``); a command error for a slug nobody registered."""
    if slug == DEFAULT_SLUG:
        return DEFAULT_TENANT_ID
    from sqlalchemy import select
    from sqlmodel import col

    from app.db.engine import make_session_factory
    from app.db.tenants import Tenant

    async with make_session_factory(engine)() as s:
        found = (await s.execute(select(col(Tenant.id)).where(col(Tenant.slug) == slug))).scalar_one_or_none()
    if found is None:
        console.print(f"[red]no tenant {slug}[/red]: `moodle-sync tenants list` shows them", highlight=False)
        raise typer.Exit(2)
    return found


@asynccontextmanager
async def tenant_runtime(settings: Settings, slug: str) -> AsyncIterator[Runtime]:
    """The tenant's runtime, on a home runtime closed at the end (with it, the tenant's)."""
    from app.runtime import open_runtime

    home = await open_runtime(settings)
    try:
        if slug == DEFAULT_SLUG:
            yield home
            return
        await tenant_id_of(home.engine, slug)
        rt, _ = await home.hub.by_slug(slug)
        if rt is None:
            console.print(f"[red]tenant {slug} is disabled[/red]: `moodle-sync tenants enable {slug}`", highlight=False)
            raise typer.Exit(2)
        yield rt
    finally:
        await home.close()
