"""arq wiring: the worker's functions, its settings and its start and stop."""

from __future__ import annotations

import asyncio
from typing import Any

from arq.worker import Worker

from app import heap
from app.jobs import probe, reconcile, sweeper
from app.jobs.queue import DEFAULT_QUEUE, SLOW_QUEUE, Queue, connect, dumps, loads
from app.jobs.redis import redis_settings
from app.jobs.tasks import process_event
from app.notify import alerts
from app.runtime import Runtime, open_runtime
from app.settings import Settings


def job_seconds(settings: Settings, queue: str) -> float:
    """How long one job of ``queue`` may run: a course duplication on the slow queue, a lease on the default."""
    return settings.moodle.duplicate_timeout_seconds + 60 if queue == SLOW_QUEUE else settings.jobs.lease_seconds


def make_worker(
    settings: Settings,
    *,
    runtime: Runtime | None = None,
    queue: str = DEFAULT_QUEUE,
    handle_signals: bool = True,
    **kw: Any,
) -> Worker:
    """A worker on one queue; pass ``runtime`` to share one with the API in the same process.

    The default queue's worker also runs the sweeper. The slow queue (course creation and duplication)
    has its own long timeout: arq recovers a killed worker's jobs only after its longest timeout.
    """
    redis = redis_settings(settings)
    slow = queue == SLOW_QUEUE

    async def startup(ctx: dict[str, Any]) -> None:
        rt = runtime or await open_runtime(settings)
        if rt.queue is None:
            rt.queue = Queue(connect(redis))
        ctx["runtime"] = rt
        if runtime is None:
            heap.settle()  # a process of its own (`moodle-sync worker`); `serve` settles its heap itself
        if not slow:
            ctx["loops"] = [
                asyncio.create_task(sweeper.run_forever(rt)),
                asyncio.create_task(reconcile.run_periodically(rt)),
                asyncio.create_task(reconcile.run_tenants_periodically(rt)),
                asyncio.create_task(alerts.run_forever(rt)),
                asyncio.create_task(probe.run_forever(rt)),
            ]
            # Work that waited for an upstream configured since (a restart with it set) starts now.
            ctx["loops"].append(asyncio.create_task(sweeper.release_held(rt.sessions, rt.queue, "started")))

    async def shutdown(ctx: dict[str, Any]) -> None:
        for task in ctx.get("loops", []):
            task.cancel()
        if runtime is None and "runtime" in ctx:
            await ctx["runtime"].close()

    kw.setdefault("poll_delay", settings.jobs.poll_delay_seconds)
    return Worker(
        functions=[process_event, reconcile.reconcile_job],
        queue_name=queue,
        redis_settings=redis,
        on_startup=startup,
        on_shutdown=shutdown,
        job_serializer=dumps,
        job_deserializer=loads,
        # Results are not kept: a kept result would block re-using a job id (replays, the sweeper).
        keep_result=0,
        # Retries are ours (app.jobs.retry) up to a horizon of hours; arq's own tries only cover a killed worker.
        max_tries=1000,
        job_timeout=job_seconds(settings, queue),
        max_jobs=2 if slow else 10,
        # SIGTERM: stop taking jobs and let the running ones finish (up to their timeout) before exiting.
        job_completion_wait=int(job_seconds(settings, queue)),
        handle_signals=handle_signals,
        **kw,
    )
