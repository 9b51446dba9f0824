"""`reconcile`: a reconcile run in this process, with a progress bar, its plan printed as a table."""

from __future__ import annotations

import asyncio
from typing import Any

import typer

from app.cli.startup import console, migrated_settings, out
from app.cli.tenancy import tenant_option
from app.settings import Settings


def reconcile(
    dry_run: bool = typer.Option(False, "--dry-run", help="show the plan, change nothing"),
    tenant: str = tenant_option(),
) -> None:
    """Reconcile now, in this process, with a progress bar; prints the plan."""
    settings = migrated_settings()
    if tenant == "default":
        _refuse_unconfigured(settings)  # before anything is opened: the file's settings say it already
    run = asyncio.run(_reconcile(settings, dry_run, tenant))
    raise typer.Exit(0 if run.status == "done" else 1)


def _refuse_unconfigured(settings: Settings) -> None:
    from app.sync.readiness import unconfigured

    missing = unconfigured(settings)
    if missing:
        # As POST /api/reconcile answers 409: not a failed run with a connection error among the log lines.
        console.print(f"[red]{' and '.join(missing)} not configured yet:[/red] nothing to reconcile")
        raise typer.Exit(2)


async def _reconcile(settings: Settings, dry_run: bool, tenant: str) -> Any:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from app.cli.tenancy import tenant_runtime
    from app.jobs import reconcile as jobs
    from app.jobs.queue import Queue, connect
    from app.jobs.redis import redis_settings

    async with tenant_runtime(settings, tenant) as rt:
        _refuse_unconfigured(rt.settings)
        queue = Queue(connect(redis_settings(settings)))
        (rt.home or rt).queue = rt.queue = queue
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("reconcile: starting", total=None)

            async def show(state: dict[str, Any]) -> None:
                detail = ", ".join(f"{k}={v}" for k, v in state.get("counts", {}).items())
                bar.update(task, description=f"reconcile: {state.get('phase')} {state.get('seen', '')} {detail}")

            run = await jobs.create_run(rt, dry_run=dry_run, trigger="cli")
            run = await jobs.execute(rt, run.id, progress=show)
    table = Table(title=f"run {run.id}: {run.status}" + (" (dry run)" if dry_run else ""))
    for column in ("action", "reason", "target"):
        table.add_column(column)
    for item in run.plan or []:
        target = ", ".join(f"{k}={v}" for k, v in item.items() if k not in ("action", "reason", "changes"))
        table.add_row(item["action"], item["reason"], target)
    out.print(table)
    if run.error:
        console.print(f"[red]{run.error}[/red]")
    return run
