"""`moodle-sync operators`: the named operators who sign in to the console (add, list, remove, passwd).

A password is read from standard input, never from an argument (the process list and the shell's history would
show it): asked twice without echo on a terminal, else one line from a pipe.
"""

from __future__ import annotations

import asyncio
import sys

import typer

from app.cli.database import session
from app.cli.startup import console, migrated_settings, out
from app.cli.tenancy import tenant_option
from app.settings import Settings

operators = typer.Typer(help="Named operators: the accounts that sign in to the console.", no_args_is_help=True)


@operators.command("add")
def add(
    name: str = typer.Argument(..., help="1 to 64 characters of a-z 0-9 . _ @ - (stored lower-case)"),
    viewer: bool = typer.Option(False, "--viewer", help="sees everything, changes nothing (default: admin)"),
    tenant: str = tenant_option(),
) -> None:
    """Add an operator; the password comes from standard input (asked twice on a terminal)."""
    settings = migrated_settings()
    name = _checked_name(name)
    asyncio.run(_change(settings, "add", name, _read_password(name), viewer=viewer, tenant=tenant))


@operators.command("list")
def list_(tenant: str = tenant_option()) -> None:
    """List the operators: name, role, when added."""
    asyncio.run(_list(migrated_settings(), tenant))


@operators.command("remove")
def remove(name: str = typer.Argument(..., help="the operator's name"), tenant: str = tenant_option()) -> None:
    """Remove an operator: their sessions end."""
    asyncio.run(_change(migrated_settings(), "remove", _checked_name(name), tenant=tenant))


@operators.command("passwd")
def passwd(name: str = typer.Argument(..., help="the operator's name"), tenant: str = tenant_option()) -> None:
    """Change an operator's password (from standard input): their sessions end."""
    settings = migrated_settings()
    name = _checked_name(name)
    asyncio.run(_change(settings, "passwd", name, _read_password(name), tenant=tenant))


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]{message}[/red]", highlight=False)
    return typer.Exit(1)


def _checked_name(name: str) -> str:
    """The name as stored, checked before a password is asked for."""
    from app.sync.operators import OperatorError, normal_name

    try:
        return normal_name(name)
    except OperatorError as exc:
        raise _fail(str(exc)) from None


def _read_password(name: str) -> str:
    from app.sync.operators import MIN_PASSWORD_CHARS

    if sys.stdin.isatty():
        prompt = f"password for {name} (at least {MIN_PASSWORD_CHARS} characters)"
        password: str = typer.prompt(prompt, hide_input=True, confirmation_prompt=True)
        return password
    line = sys.stdin.readline()
    if not line:
        raise _fail("no password on standard input: pipe it in, or run the command on a terminal to be asked")
    return line.rstrip("\r\n")


async def _change(
    settings: Settings, action: str, name: str, password: str = "", *, viewer: bool = False, tenant: str = "default"
) -> None:
    import getpass

    from app.sync import operators as rules

    actor = f"cli:{getpass.getuser()}"
    async with session(settings, tenant) as s:
        try:
            if action == "add":
                role = rules.OperatorRole.viewer if viewer else rules.OperatorRole.admin
                await rules.add(s, name, password, role=role, actor=actor)
                done = f"operator {name} added ({role.value})"
            elif action == "passwd":
                await rules.change_password(s, name, password, actor=actor)
                done = f"password of {name} changed; their sessions are over"
            else:
                await rules.remove(s, name, actor=actor)
                done = f"operator {name} removed; their sessions are over"
        except rules.OperatorError as exc:
            raise _fail(str(exc)) from None
        await s.commit()
    console.print(done, highlight=False)


async def _list(settings: Settings, tenant: str) -> None:
    from rich.table import Table

    from app.sync.operators import list_operators

    async with session(settings, tenant) as s:
        rows = await list_operators(s)
    table = Table()
    for column in ("name", "role", "created"):
        table.add_column(column)
    for o in rows:
        table.add_row(o.name, o.role, f"{o.created_at:%Y-%m-%d %H:%M}")
    out.print(table)
    if not rows:
        console.print("no operators yet: add one with `moodle-sync operators add NAME`")
