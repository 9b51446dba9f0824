"""What every command starts from: the two consoles, and the settings, refused with one line per problem."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from rich.console import Console

from app.devmode import apply_dev_secrets
from app.logs import register_secrets
from app.logs import setup as setup_logs
from app.notify.debuglog import setup_debug_log
from app.settings import Settings

console = Console(stderr=True, soft_wrap=True)  # messages: never wrapped at 80 columns when captured
out = Console()  # data (tables, plans): stdout, for pipes


def load_settings() -> Settings:
    """The settings, with logging set up from them; a configuration error ends the command with exit status 2."""
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


def migrated_settings() -> Settings:
    """The settings of a command that needs the database's schema: refused with one clear line (not an SQL
    traceback, nor a service answering 500) while the database answers but is not migrated to this version."""
    from app.db.engine import make_engine
    from app.db.schema import schema_problem

    settings = load_settings()

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


def long_running(settings: Settings) -> Settings:
    """The settings of a long-running command: its metrics go to the host's directory, read by the API's /metrics."""
    from app.metrics_files import enable

    enable(settings.metrics_dir)
    return settings


def announce(settings: Settings) -> None:
    """What a serving process runs with, and what is not configured yet, before its first log line."""
    on = [name for name, enabled in settings.inbound_methods().items() if enabled]
    console.print(f"mode: {settings.mode}; inbound methods on: {', '.join(on) or 'none'}", highlight=False)
    console.print(f"var folder: {settings.var_dir.resolve()} (database: {database_name(settings)})", highlight=False)
    if not settings.moodle.configured:
        console.print("[yellow]Moodle is not configured yet[/yellow] (SYNC_MOODLE__URL, SYNC_MOODLE__TOKEN)")
    if not settings.coursesales.configured:
        console.print(
            "[yellow]CourseSales is not configured yet[/yellow] (SYNC_COURSESALES__URL, __USERNAME, __PASSWORD)"
        )


def database_name(settings: Settings) -> str:
    """The database, without its password: a SQLite file's path, or the server and database name."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.effective_database_url)
    if url.get_backend_name() == "sqlite":
        return str(Path(url.database or "").resolve())
    return f"{url.get_backend_name()} {url.host or 'localhost'}/{url.database}"
