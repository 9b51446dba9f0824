"""The `moodle-sync` command: serve, api, worker, migrate, check, openapi."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from app.db.models import EventStatus as EventStatusChoice
from app.devmode import apply_dev_secrets
from app.logs import register_secrets
from app.logs import setup as setup_logs
from app.notify.debuglog import setup_debug_log
from app.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

cli = typer.Typer(help="coursesales-moodle-sync: keeps CourseSales and Moodle in step.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)  # messages: never wrapped at 80 columns when captured
out = Console()  # data (tables, plans): stdout, for pipes

HostOpt = typer.Option("127.0.0.1", "--host", help="address to listen on")
PortOpt = typer.Option(8000, "--port", help="port to listen on")


def _settings() -> Settings:
    from pydantic import ValidationError

    try:
        settings = apply_dev_secrets(Settings())
    except ValidationError as exc:
        # One line per bad value, naming its variable (SYNC_MODE= was a traceback).
        for error in exc.errors():
            name = "SYNC_" + "__".join(str(part).upper() for part in error["loc"])
            console.print(f"[red]configuration error:[/red] {name}: {error['msg']}", highlight=False)
        raise typer.Exit(2) from None
    from app.config_keys import unknown_environment

    for warning in unknown_environment():
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    problems = settings.problems()
    if problems:
        for p in problems:
            console.print(f"[red]configuration error:[/red] {p}", highlight=False)
        if settings.mode == "production" and any("required outside dev mode" in p for p in problems):
            console.print(
                "for a trial on this machine, SYNC_MODE=dev generates the secrets under the var folder "
                f"({settings.var_dir.resolve()}; `make run` does this); see the README's Configuration",
                highlight=False,
            )
        raise typer.Exit(2)
    setup_logs(settings.log_level, json_lines=settings.log_json)
    register_secrets(settings.secret_values())
    setup_debug_log(settings.alerts.debug_log_file)
    return settings


def _migrated_settings() -> Settings:
    """The settings of a command that needs the database's schema: refused with one clear line (not an SQL
    traceback, nor a service answering 500) while the database answers but is not migrated to this version."""
    from app.db.engine import make_engine
    from app.db.schema import schema_problem

    settings = _settings()

    async def problem() -> str | None:
        engine = make_engine(settings.effective_database_url)
        try:
            return await schema_problem(engine)
        except Exception:  # the database does not answer yet: the service starts, /readyz says so
            return None
        finally:
            await engine.dispose()

    found = asyncio.run(problem())
    if found:
        console.print(f"[red]database error:[/red] {found}")
        raise typer.Exit(2)
    return settings


def _serving(settings: Settings) -> Settings:
    """The settings of a long-running command: its metrics go to the host's directory, read by the API's /metrics."""
    from app.metrics_files import enable

    enable(settings.metrics_dir)
    return settings


def _announce(settings: Settings) -> None:
    on = [name for name, enabled in settings.inbound_methods().items() if enabled]
    console.print(f"mode: {settings.mode}; inbound methods on: {', '.join(on) or 'none'}", highlight=False)
    console.print(f"var folder: {settings.var_dir.resolve()} (database: {_database_name(settings)})", highlight=False)
    if not settings.moodle.configured:
        console.print("[yellow]Moodle is not configured yet[/yellow] (SYNC_MOODLE__URL, SYNC_MOODLE__TOKEN)")
    if not settings.coursesales.configured:
        console.print(
            "[yellow]CourseSales is not configured yet[/yellow] (SYNC_COURSESALES__URL, __USERNAME, __PASSWORD)"
        )


def _database_name(settings: Settings) -> str:
    """The database, without its password: a SQLite file's path, or the server and database name."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.effective_database_url)
    if url.get_backend_name() == "sqlite":
        return str(Path(url.database or "").resolve())
    return f"{url.get_backend_name()} {url.host or 'localhost'}/{url.database}"


@cli.command()
def migrate(revision: str = typer.Argument("head")) -> None:
    """Bring the database schema up to date."""
    settings = _settings()
    run_migrations(settings.effective_database_url, revision)
    console.print(f"database at {revision}: {_database_name(settings)}", highlight=False)


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


def run_fast(main: Coroutine[Any, Any, None]) -> None:
    """Long-running commands run on uvloop when it is installed (as uvicorn's own CLI does), else on asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


@cli.command()
def serve(host: str = HostOpt, port: int = PortOpt) -> None:
    """API and worker in one process (the small-install default)."""
    settings = _serving(_migrated_settings())
    _announce(settings)
    run_fast(_serve(settings, host, port, with_worker=True))


@cli.command()
def api(
    host: str = HostOpt,
    port: int = PortOpt,
    processes: int = typer.Option(1, "--workers", min=1, max=64, help="API processes sharing the port"),
) -> None:
    """The HTTP API only (run workers elsewhere)."""
    settings = _serving(_migrated_settings())
    _announce(settings)
    if processes == 1:
        run_fast(_serve(settings, host, port, with_worker=False))
        return
    import uvicorn

    from app.http_server import limits

    uvicorn.run(
        "app.cli:api_app", factory=True, host=host, port=port, workers=processes, log_config=None,
        **limits(settings.api),
    )  # fmt: skip


def api_app() -> Any:
    """The API of one of the processes `moodle-sync api --workers N` starts."""
    from app.main import create_app

    return create_app(_settings())


@cli.command()
def worker(queue: str = typer.Option("all", "--queue", help="default, slow (course creation) or all")) -> None:
    """Workers only (no HTTP); their metrics reach the API's /metrics on the same host, or `metrics.worker_port`."""
    settings = _serving(_migrated_settings())
    if settings.metrics.worker_port:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(settings.metrics_dir))
        start_http_server(settings.metrics.worker_port, registry=registry)
        console.print(f"worker metrics on port {settings.metrics.worker_port}")
    run_fast(_workers(settings, queue))


async def _workers(settings: Settings, which: str) -> None:
    from app.jobs.queue import DEFAULT_QUEUE, SLOW_QUEUE
    from app.jobs.worker import make_worker

    names = {"default": [DEFAULT_QUEUE], "slow": [SLOW_QUEUE], "all": [DEFAULT_QUEUE, SLOW_QUEUE]}[which]
    workers = [make_worker(settings, queue=name) for name in names]
    _worker_log("worker.started", workers)
    try:
        await asyncio.gather(*(w.async_run() for w in workers))
    except asyncio.CancelledError:
        # SIGTERM: arq let the running jobs finish, then stopped its loop by cancelling it. A clean stop, exit 0.
        _worker_log("worker.stopped", workers)
        console.print("worker stopped")


async def _serve(settings: Settings, host: str, port: int, *, with_worker: bool) -> None:
    import uvicorn

    from app.http_server import server_config
    from app.jobs.queue import DEFAULT_QUEUE, SLOW_QUEUE, Queue, connect
    from app.jobs.redis import redis_settings
    from app.jobs.worker import make_worker
    from app.main import create_app, settle_heap
    from app.runtime import build_runtime

    class Server(uvicorn.Server):
        """uvicorn's server, except that the signal that stopped it is not raised again once it has: uvicorn does
        that to end the process, which killed it before the finally below (the workers beside it, the runtime, the
        embedded Redis) and left an embedded redis-server running after every stop (exit status 143)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                self._captured_signals.clear()

    rt = build_runtime(settings)
    rt.queue = Queue(connect(redis_settings(settings)))
    server = Server(server_config(create_app(settings, runtime=rt), host=host, port=port, api=settings.api))
    settle_heap()
    tasks = [asyncio.create_task(server.serve())]
    workers = (
        [make_worker(settings, runtime=rt, queue=q, handle_signals=False) for q in (DEFAULT_QUEUE, SLOW_QUEUE)]
        if with_worker
        else []
    )
    tasks += [asyncio.create_task(w.async_run()) for w in workers]
    _worker_log("worker.started", workers)
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        await _let_jobs_finish(settings, workers)
        for w in workers:
            await w.close()  # cancels what is still running after the wait
        await asyncio.gather(*tasks, return_exceptions=True)
        _worker_log("worker.stopped", workers)
        await rt.close()


def _worker_log(event: str, workers: list[Any]) -> None:
    """One line for the workers of this process (arq's own say it once per queue)."""
    if not workers:
        return
    import structlog

    counts = {
        "jobs_complete": sum(w.jobs_complete for w in workers),
        "jobs_failed": sum(w.jobs_failed for w in workers),
    }
    structlog.get_logger("app.cli").info(
        event, queues=[w.queue_name for w in workers], **(counts if event == "worker.stopped" else {})
    )


async def _let_jobs_finish(settings: Settings, workers: list[Any]) -> None:
    """A stop lets the running jobs finish, up to their timeout, as `moodle-sync worker` does."""
    from app.jobs.worker import job_seconds

    for w in workers:
        w.allow_pick_jobs = False
    running = [t for w in workers for t in w.tasks.values() if not t.done()]
    if running:
        await asyncio.wait(running, timeout=max(job_seconds(settings, w.queue_name) for w in workers))


@cli.command()
def check() -> None:
    """Check the Moodle token (functions, hidden names) and the CourseSales login (categories, fields)."""
    settings = _settings()
    if not settings.moodle.configured:
        console.print("[red]Moodle is not configured[/red]: set SYNC_MOODLE__URL and SYNC_MOODLE__TOKEN")
        raise typer.Exit(1)
    raise typer.Exit(0 if asyncio.run(_check(settings)) else 1)


async def _check(settings: Settings) -> bool:
    from app.checks import Finding, check_coursesales, check_moodle
    from app.runtime import build_runtime

    rt = build_runtime(settings)
    try:
        findings = await check_moodle(rt.moodle)
        if settings.coursesales.configured:
            findings += await check_coursesales(rt.coursesales, settings.courses)
        else:
            findings.append(
                Finding("warn", "CourseSales is not configured (SYNC_COURSESALES__URL, __USERNAME, __PASSWORD)")
            )
        findings += await _held_upstreams(rt)
    finally:
        await rt.close()
    colours = {"ok": "green", "warn": "yellow", "error": "red"}
    for f in findings:
        console.print(f"[{colours[f.level]}]{f.level:5}[/] {f.message}")
    return not any(f.level == "error" for f in findings)


async def _held_upstreams(rt: Any) -> list[Any]:
    """What the running service last recorded of each upstream: work it holds for one that cannot be used."""
    from app.checks import Finding
    from app.sync import upstreams

    try:
        async with rt.sessions() as s:
            states = upstreams.report(rt.settings, await upstreams.load(s))
    except Exception:  # no database yet (a check before the first migrate): nothing recorded
        return []
    return [
        Finding("warn", f"the service holds the work for {name}: {st['state']} since {st['since']}: {st['reason']}")
        for name, st in states.items()
        if st["state"] in (upstreams.UNAVAILABLE, upstreams.AUTH_FAILED)
    ]


@cli.command()
def reconcile(dry_run: bool = typer.Option(False, "--dry-run", help="show the plan, change nothing")) -> None:
    """Reconcile now, in this process, with a progress bar; prints the plan."""
    from app.sync.readiness import unconfigured

    settings = _migrated_settings()
    missing = unconfigured(settings)
    if missing:
        # As POST /api/reconcile answers 409: not a failed run with a connection error among the log lines.
        console.print(f"[red]{' and '.join(missing)} not configured yet:[/red] nothing to reconcile")
        raise typer.Exit(2)
    run = asyncio.run(_reconcile(settings, dry_run))
    raise typer.Exit(0 if run.status == "done" else 1)


async def _reconcile(settings: Settings, dry_run: bool) -> Any:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from app.jobs import reconcile as jobs
    from app.jobs.queue import Queue, connect
    from app.jobs.redis import redis_settings
    from app.runtime import build_runtime

    rt = build_runtime(settings)
    rt.queue = Queue(connect(redis_settings(settings)))
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("reconcile: starting", total=None)

            async def show(state: dict[str, Any]) -> None:
                detail = ", ".join(f"{k}={v}" for k, v in state.get("counts", {}).items())
                bar.update(task, description=f"reconcile: {state.get('phase')} {state.get('seen', '')} {detail}")

            run = await jobs.create_run(rt, dry_run=dry_run, trigger="cli")
            run = await jobs.execute(rt, run.id, progress=show)
    finally:
        await rt.close()
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


@cli.command()
def events(
    status: EventStatusChoice = typer.Option(None, "--status", help="only events in this status"),
    kind: str = typer.Option(None, "--kind", max=64),
    limit: int = typer.Option(30, "--limit", min=1, max=1000),
) -> None:
    """List events, newest first."""
    asyncio.run(_events(_migrated_settings(), status, kind, limit))


async def _events(settings: Settings, status: EventStatusChoice | None, kind: str | None, limit: int) -> None:
    from rich.table import Table
    from sqlalchemy import select
    from sqlmodel import col

    from app.db.models import Event

    async with _session(settings) as s:
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


@cli.command()
def replay(event_id: int, note: str = typer.Option(None, "--note")) -> None:
    """Run a finished event again (never a second effect)."""
    asyncio.run(_operate(_migrated_settings(), "replay", event_id=event_id, note=note))


@cli.command()
def resolve(event_id: int, note: str = typer.Option(..., "--note", help="what you found, kept with the event")) -> None:
    """Close a needs_review or failed event without running it again."""
    asyncio.run(_operate(_migrated_settings(), "resolve", event_id=event_id, note=note))


@cli.command()
def pause(note: str = typer.Option(None, "--note")) -> None:
    """Stop processing (events are still accepted and kept), e.g. during a Moodle upgrade."""
    asyncio.run(_operate(_migrated_settings(), "pause", note=note))


@cli.command()
def resume(note: str = typer.Option(None, "--note")) -> None:
    """Start processing again."""
    asyncio.run(_operate(_migrated_settings(), "resume", note=note))


@cli.command()
def probe() -> None:
    """Probe Moodle and CourseSales now and show each one's state; one that answers again has its work resumed."""
    raise typer.Exit(asyncio.run(_probe(_migrated_settings())))


async def _probe(settings: Settings) -> int:
    from app.jobs.probe import probe_all
    from app.jobs.queue import Queue, connect
    from app.jobs.redis import redis_settings
    from app.runtime import build_runtime

    rt = build_runtime(settings)
    rt.queue = Queue(connect(redis_settings(settings)))
    try:
        report = await probe_all(rt, "cli", force=True)
    finally:
        await rt.close()
    for name, state in report.items():
        line = f"{name}: {state['state']}" + (
            f" since {state['since']}: {state['reason']}" if "reason" in state else ""
        )
        console.print(line, highlight=False)
        if state.get("fix"):
            console.print(f"  fix: {state['fix']}", highlight=False)
    return 0 if all(s["state"] in ("ok", "not_configured") for s in report.values()) else 1


@cli.command("do-not-sync")
def do_not_sync(
    contact: str = typer.Argument(..., help="a contact id, a username, or a key (contact:1234)"),
    undo: bool = typer.Option(False, "--undo", help="sync the contact again"),
    note: str = typer.Option(None, "--note", help="why (kept in the audit trail)"),
) -> None:
    """Take a contact out of the sync (an erasure request): nothing is made for it in Moodle again."""
    asyncio.run(_operate(_migrated_settings(), "sync-again" if undo else "do-not-sync", contact=contact, note=note))


async def _release_held(settings: Settings) -> None:
    """Queue the work the pause held, now (the sweeper would take up to its interval)."""
    from app.db.engine import make_engine, make_session_factory
    from app.jobs.queue import Queue, connect
    from app.jobs.redis import redis_settings
    from app.jobs.sweeper import release_held

    # The queue and the database are all it needs (no upstream clients, no secret key).
    engine = make_engine(settings.effective_database_url)
    queue = Queue(connect(redis_settings(settings)))
    try:
        count = await release_held(make_session_factory(engine), queue, "resumed")
    finally:
        await queue.close()
        await engine.dispose()
    console.print(f"{count} held event(s) queued")


def _session(settings: Settings) -> contextlib.AbstractAsyncContextManager[AsyncSession]:
    from contextlib import asynccontextmanager

    from app.db.engine import make_engine, make_session_factory

    @asynccontextmanager
    async def scope() -> AsyncIterator[AsyncSession]:
        engine = make_engine(settings.effective_database_url)
        try:
            async with make_session_factory(engine)() as session:
                yield session
        finally:
            await engine.dispose()

    return scope()


async def _operate(
    settings: Settings, action: str, *, event_id: int | None = None, note: str | None = None, contact: str = ""
) -> None:
    import getpass

    from app.sync import operations

    actor = f"cli:{getpass.getuser()}"
    was_paused = False
    async with _session(settings) as s:
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
        await _release_held(settings)
    # A replayed event is queued by the sweeper within a minute; no Redis needed here.
    console.print(
        f"{action} done" + (f" (event {event_id})" if event_id else "") + (f" ({contact})" if contact else "")
    )


@cli.command()
def openapi() -> None:
    """Print the OpenAPI document (the committed openapi/openapi.json is this output)."""
    from app.main import create_app

    sys.stdout.write(json.dumps(create_app(Settings()).openapi(), indent=2, sort_keys=True) + "\n")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
