"""The `moodle-sync` command: serve, api, worker, migrate, check, reconcile, the operator's commands, openapi,
the named operators' accounts (`moodle-sync operators add|list|remove|passwd`) and the tenant registry
(`moodle-sync tenants add|list|show|update|disable|enable|remove`).

The commands live by what they act on (serving, database, upstreams, runs, operations); the table below registers
them, in the order `moodle-sync --help` lists them.
"""

from __future__ import annotations

import typer

from app.cli.database import migrate, run_migrations
from app.cli.diagnose import diagnose
from app.cli.keys import rotate_key
from app.cli.operations import do_not_sync, events, pause, replay, resolve, resume
from app.cli.operators import operators
from app.cli.runs import reconcile
from app.cli.serving import api, api_app, openapi, serve, worker
from app.cli.startup import console
from app.cli.tenants import tenants
from app.cli.upstreams import _held_upstreams, check, probe

__all__ = ["_held_upstreams", "api_app", "cli", "main", "run_migrations"]

cli = typer.Typer(help="coursesales-moodle-sync: keeps CourseSales and Moodle in step.", no_args_is_help=True)
COMMANDS = (
    *(migrate, serve, api, worker, check, reconcile),
    *(events, replay, resolve, pause, resume, probe, do_not_sync, diagnose, rotate_key, openapi),
)
for _command in COMMANDS:
    cli.command()(_command)  # named after its function: do_not_sync is `do-not-sync`
cli.add_typer(operators, name="operators")  # a group: `moodle-sync operators add|list|remove|passwd`
cli.add_typer(tenants, name="tenants")  # a group: `moodle-sync tenants add|list|show|update|...`


def main() -> None:
    from app.sync.keyring import KeyringError

    try:
        cli()
    except KeyringError as exc:  # a key that does not open the database's keyring: one line, never a traceback
        console.print(f"[red]{exc}[/red]", highlight=False)
        raise SystemExit(2) from None
