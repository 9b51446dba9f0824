"""`moodle-sync tenants`: the tenant registry (add, list, show, update, disable, enable, remove).

A tenant's settings come from a TOML file written as sync.toml is (``--config``); its secrets, never from an
argument (the process list and the shell's history would show them), as NAME=VALUE lines from ``--secrets-file``
or, piped, from standard input (``MOODLE__TOKEN=...``; in `update`, ``NAME=`` with nothing after it removes one).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from app.cli.database import session
from app.cli.startup import console, migrated_settings, out
from app.settings import Settings, secret

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.crypto import Vault

T = TypeVar("T")
tenants = typer.Typer(help="The tenant registry: one deployment, many providers.", no_args_is_help=True)
SlugArg = typer.Argument(..., help="the tenant's slug: 1 to 40 characters of a-z 0-9 -")
CONFIG_HELP = "a TOML file of the tenant's sections, written as sync.toml is"
SECRETS_HELP = "a file of NAME=VALUE lines (MOODLE__TOKEN=...); without it, piped standard input is read"


@tenants.command("add")
def add(
    slug: str = SlugArg,
    name: str = typer.Option(..., "--name", help="the tenant's display name"),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    secrets_file: Path | None = typer.Option(None, "--secrets-file", help=SECRETS_HELP),
) -> None:
    """Register a tenant; its secrets come from --secrets-file or standard input, never from arguments."""
    from app.sync import tenants as rules
    from app.sync.tenant_views import tenant_view

    values, secrets = _config(config), _secrets(secrets_file, removable=False)

    async def act(s: AsyncSession, vault: Vault, settings: Settings) -> dict[str, Any]:
        t = await rules.add(s, vault, settings, slug=slug, name=name, config=values, secrets=secrets, actor=_actor())
        return tenant_view(t, settings.hub.public_url)

    _show(_run(act, commit=True), f"tenant {slug} added")


@tenants.command("list")
def list_() -> None:
    """The tenants: default (the file configuration) first, then the registry's by slug."""
    from rich.table import Table

    from app.sync import tenants as rules
    from app.sync.tenant_views import default_view, tenant_view

    async def act(s: AsyncSession, _vault: Vault, settings: Settings) -> list[dict[str, Any]]:
        rows, _ = await rules.list_tenants(s)
        return [default_view(settings)] + [tenant_view(t, settings.hub.public_url) for t in rows]

    table = Table()
    for column in ("slug", "name", "enabled", "source", "secrets set"):
        table.add_column(column)
    for t in _run(act):
        table.add_row(t["slug"], t["name"], "yes" if t["enabled"] else "no", t["source"], ", ".join(t["secrets"]))
    out.print(table)


@tenants.command("show")
def show(slug: str = SlugArg) -> None:
    """One tenant as JSON: its config, the names of its secrets (never their values), its inbound URLs."""
    from app.db.tenants import DEFAULT_SLUG
    from app.sync import tenants as rules
    from app.sync.tenant_views import default_view, tenant_view

    async def act(s: AsyncSession, _vault: Vault, settings: Settings) -> dict[str, Any]:
        if slug == DEFAULT_SLUG:
            return default_view(settings)
        return tenant_view(await rules.get_tenant(s, slug), settings.hub.public_url)

    _show(_run(act))


@tenants.command("update")
def update(
    slug: str = SlugArg,
    name: str | None = typer.Option(None, "--name", help="a new display name"),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP + "; merged key by key"),
    secrets_file: Path | None = typer.Option(None, "--secrets-file", help=SECRETS_HELP + "; NAME= removes one"),
) -> None:
    """Merge a name, sections and keys, and secrets into a tenant's."""
    from app.sync import tenants as rules
    from app.sync.tenant_views import tenant_view

    values = _config(config) if config else None
    secrets = _secrets(secrets_file, removable=True) or None

    async def act(s: AsyncSession, vault: Vault, settings: Settings) -> dict[str, Any]:
        t = await rules.update(s, vault, settings, slug, name=name, config=values, secrets=secrets, actor=_actor())
        return tenant_view(t, settings.hub.public_url)

    _show(_run(act, commit=True), f"tenant {slug} updated")


@tenants.command("disable")
def disable(slug: str = SlugArg) -> None:
    """Refuse the tenant's deliveries and process nothing for it, until it is enabled again."""
    _set_enabled(slug, enabled=False)


@tenants.command("enable")
def enable(slug: str = SlugArg) -> None:
    """Serve a disabled tenant again."""
    _set_enabled(slug, enabled=True)


@tenants.command("remove")
def remove(
    slug: str = SlugArg,
    confirm: str = typer.Option(..., "--confirm", help="the slug again: the tenant and its data are deleted"),
) -> None:
    """Delete a tenant, its credentials and its data (irreversible: --confirm repeats the slug)."""
    from app.sync import tenants as rules

    async def act(s: AsyncSession, _vault: Vault, _settings: Settings) -> None:
        await rules.remove(s, slug, confirm=confirm, actor=_actor())

    _run(act, commit=True)
    console.print(f"tenant {slug} removed", highlight=False)


def _set_enabled(slug: str, *, enabled: bool) -> None:
    from app.sync import tenants as rules

    async def act(s: AsyncSession, _vault: Vault, _settings: Settings) -> Any:
        return await rules.set_enabled(s, slug, enabled=enabled, actor=_actor())

    _run(act, commit=True)
    console.print(f"tenant {slug} {'enabled' if enabled else 'disabled'}", highlight=False)


def tenant_settings_of(settings: Settings, slug: str) -> Settings:
    """A registered tenant's Settings (`check --tenant`); a command error when it cannot be had."""
    from app.sync import tenants as rules
    from app.tenant_settings import tenant_settings

    async def act(s: AsyncSession, vault: Vault, base: Settings) -> Settings:
        return tenant_settings(base, await rules.get_tenant(s, slug), vault=vault)

    return _run(act, settings=settings)


def _run(
    act: Callable[[AsyncSession, Vault, Settings], Awaitable[T]],
    *,
    commit: bool = False,
    settings: Settings | None = None,
) -> T:
    """``act`` in a session on the migrated database, committed if asked; a refusal is one line per problem."""
    from app.crypto import Vault
    from app.sync import keyring
    from app.sync.tenant_checks import TenantError

    settings = settings or migrated_settings()
    key = secret(settings.secret_key)
    if key is None:
        raise _fail("SYNC_SECRET_KEY is required to keep tenants' secrets", status=2)

    async def scope() -> T:
        async with session(settings) as s:
            # The keyring's data keys, as every process uses them: never keys derived from SYNC_SECRET_KEY, which
            # a rotation changes (app/sync/keyring.py).
            opened = await keyring.open_keys(s, key, secret(settings.secret_key_previous))
            done = await act(s, Vault(key, keys=opened.keys), settings)
            if commit:
                await s.commit()
            return done

    try:
        return asyncio.run(scope())
    except TenantError as exc:
        raise _fail(*exc.problems) from None


def _show(view: dict[str, Any], done: str | None = None) -> None:
    typer.echo(json.dumps(view, indent=2, default=str))
    if done:
        console.print(done, highlight=False)


def _config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise _fail(f"--config {path}: {exc}") from None


def _secrets(path: Path | None, *, removable: bool) -> dict[str, str | None]:
    """NAME=VALUE lines (blank lines and # comments skipped); a line's text is never shown, only its number."""
    if path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise _fail(f"--secrets-file {path}: {exc.strerror}") from None
    else:
        text = "" if sys.stdin.isatty() else sys.stdin.read()
    found: dict[str, str | None] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise _fail(f"secrets line {number}: write NAME=VALUE (MOODLE__TOKEN=...)")
        found[name.strip()] = value.strip() if value.strip() or not removable else None
    return found


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _fail(*lines: str, status: int = 1) -> typer.Exit:
    for line in lines:
        console.print(f"[red]{line}[/red]", highlight=False)
    return typer.Exit(status)
