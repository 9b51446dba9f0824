"""The long-running commands: `serve` (API and workers in one process), `api`, `worker`; and `openapi`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Coroutine, Iterator
from typing import Any

import typer

from app.cli.startup import announce, console, load_settings, long_running, migrated_settings
from app.settings import Settings

HostOpt = typer.Option("127.0.0.1", "--host", help="address to listen on")
PortOpt = typer.Option(8000, "--port", help="port to listen on")


def run_fast(main: Coroutine[Any, Any, None]) -> None:
    """Long-running commands run on uvloop when it is installed (as uvicorn's own CLI does), else on asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def serve(host: str = HostOpt, port: int = PortOpt) -> None:
    """API and worker in one process (the small-install default)."""
    settings = long_running(migrated_settings())
    announce(settings)
    run_fast(_serve(settings, host, port, with_worker=True))


def api(
    host: str = HostOpt,
    port: int = PortOpt,
    processes: int = typer.Option(1, "--workers", min=1, max=64, help="API processes sharing the port"),
) -> None:
    """The HTTP API only (run workers elsewhere)."""
    settings = long_running(migrated_settings())
    announce(settings)
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

    return create_app(load_settings())


def worker(queue: str = typer.Option("all", "--queue", help="default, slow (course creation) or all")) -> None:
    """Workers only (no HTTP); their metrics reach the API's /metrics on the same host, or `metrics.worker_port`."""
    settings = long_running(migrated_settings())
    if settings.metrics.worker_port:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(settings.metrics_dir))
        start_http_server(settings.metrics.worker_port, registry=registry)
        console.print(f"worker metrics on port {settings.metrics.worker_port}")
    run_fast(_workers(settings, queue))


def openapi() -> None:
    """Print the OpenAPI document (the committed openapi/openapi.json is this output)."""
    from app.main import create_app

    sys.stdout.write(json.dumps(create_app(Settings()).openapi(), indent=2, sort_keys=True) + "\n")


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

    from app import heap
    from app.http_server import server_config
    from app.jobs.queue import DEFAULT_QUEUE, SLOW_QUEUE, Queue, connect
    from app.jobs.redis import redis_settings
    from app.jobs.worker import make_worker
    from app.main import create_app
    from app.runtime import open_runtime

    class Server(uvicorn.Server):
        """uvicorn's server, except that the signal that stopped it is not raised again once it has: uvicorn does
        that to end the process, which killed it before the finally below (the workers beside it, the runtime, the
        embedded Redis) and left an embedded redis-server running after every stop (exit status 143)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                self._captured_signals.clear()

    # The queue (an embedded redis-server, when no URL is set) before the first await: a stop that comes while it
    # starts is held until it has, then exits through Python, which stops it (app.jobs.redis).
    queue = Queue(connect(redis_settings(settings)))
    rt = await open_runtime(settings)
    rt.queue = queue
    server = Server(server_config(create_app(settings, runtime=rt), host=host, port=port, api=settings.api))
    heap.settle()
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
