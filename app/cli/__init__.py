"""The `moodle-sync` command: serve, api, worker, migrate, check, reconcile, the operator's commands, openapi,
and the named operators' accounts (`moodle-sync operators add|list|remove|passwd`).

The commands live by what they act on (serving, database, upstreams, runs, operations); the table below registers
them, in the order `moodle-sync --help` lists them.
"""

from __future__ import annotations

import typer

from app.cli.database import migrate, run_migrations
from app.cli.diagnose import diagnose
from app.cli.operations import do_not_sync, events, pause, replay, resolve, resume
from app.cli.operators import operators
from app.cli.runs import reconcile
from app.cli.serving import api, api_app, openapi, serve, worker
from app.cli.upstreams import _held_upstreams, check, probe

__all__ = ["_held_upstreams", "api_app", "cli", "main", "run_migrations"]

cli = typer.Typer(help="coursesales-moodle-sync: keeps CourseSales and Moodle in step.", no_args_is_help=True)
COMMANDS = (
    *(migrate, serve, api, worker, check, reconcile),
    *(events, replay, resolve, pause, resume, probe, do_not_sync, diagnose, openapi),
)
for _command in COMMANDS:
    cli.command()(_command)  # named after its function: do_not_sync is `do-not-sync`
cli.add_typer(operators, name="operators")  # a group: `moodle-sync operators add|list|remove|passwd`


def main() -> None:
    cli()
