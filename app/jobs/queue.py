"""Enqueueing: job ids, JSON serialisation, and a Redis outage that never loses an accepted event."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog
from arq.connections import ArqRedis, RedisSettings
from arq.constants import job_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms, to_unix_ms
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import UnixDomainSocketConnection
from redis.exceptions import RedisError

from app.events.registry import Lane, spec

log = structlog.get_logger(__name__)

DEFAULT_QUEUE = "sync:default"
SLOW_QUEUE = "sync:slow"  # the slow lane (app.events.registry.Lane): own queue, own long timeout


def queue_for(kind: str | None) -> str:
    known = spec(kind) if kind is not None else None
    return SLOW_QUEUE if known is not None and known.lane == Lane.slow else DEFAULT_QUEUE


def dumps(obj: Any) -> bytes:
    # default=repr: arq also serialises a job's failure (an exception, e.g. "job expired" for a job a round took out
    # of the queue just as a worker picked it); refused, it logged a TypeError traceback for a harmless race.
    return json.dumps(obj, separators=(",", ":"), default=repr).encode()


def loads(data: bytes) -> Any:
    return json.loads(data)


def event_job_id(event_id: int, attempts: int) -> str:
    """One job id per event and attempt: a retry or a replay never collides with a finished job."""
    return f"event:{event_id}:{attempts}"


def connect(redis: RedisSettings) -> ArqRedis:
    """An arq connection that fails fast while Redis is down instead of retrying for seconds."""
    common: dict[str, Any] = {
        "db": redis.database,
        "password": redis.password,
        "username": redis.username,
        "socket_connect_timeout": 1.0,
        "socket_timeout": 5.0,
    }
    if redis.unix_socket_path:
        pool = ConnectionPool(connection_class=UnixDomainSocketConnection, path=redis.unix_socket_path, **common)
    else:
        pool = ConnectionPool(host=redis.host, port=redis.port, **common)
    return ArqRedis(pool, job_serializer=dumps, job_deserializer=loads, default_queue_name=DEFAULT_QUEUE)


class Queue:
    """Puts event jobs on arq; a failure is logged and left to the sweeper, never raised to a webhook."""

    def __init__(self, redis: ArqRedis) -> None:
        self.redis = redis

    async def enqueue_event(
        self, event_id: int, attempts: int, *, kind: str | None = None, defer_until: datetime | None = None
    ) -> bool:
        return bool(await self.enqueue_events([(event_id, attempts, kind)], defer_until=defer_until))

    async def enqueue_events(
        self, items: Sequence[tuple[int, int, str | None]], *, defer_until: datetime | None = None
    ) -> list[int]:
        """Enqueue (event id, attempts, kind) items in one round trip; return the ids now in the queue (all or none).

        arq's enqueue_job WATCHes each job id (three round trips a job). One MULTI/EXEC of the same two writes per
        job, each only-if-absent, is the same enqueue: a job id already waiting or running is left as it is (the
        sweeper's and a replay's repeats are harmless). On failure the caller leaves the events to the sweeper.
        """
        if not items:
            return []
        jobs = [(event_job_id(event_id, attempts), event_id, kind) for event_id, attempts, kind in items]
        return await self._enqueue(jobs, defer_until)

    async def enqueue_again(self, event_id: int, kind: str | None) -> bool:
        """The job of an event whose job gave its turn to another tenant (app.jobs.fairness), under a job id of its
        own: the running job still holds the event's usual one."""
        return bool(await self._enqueue([(f"event:{event_id}:turn:{uuid.uuid4().hex[:12]}", event_id, kind)], None))

    async def _enqueue(self, jobs: Sequence[tuple[str, int, str | None]], defer_until: datetime | None) -> list[int]:
        now = timestamp_ms()
        score = to_unix_ms(defer_until) if defer_until is not None else now
        expires = max(score - now, 0) + self.redis.expires_extra_ms
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for job_id, event_id, kind in jobs:
                    job = serialize_job("process_event", (event_id,), {}, None, now, serializer=dumps)
                    pipe.set(job_key_prefix + job_id, job, px=expires, nx=True)
                    pipe.zadd(queue_for(kind), {job_id: score}, nx=True)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("queue.enqueue.failed", events=len(jobs), error=type(exc).__name__)
            return []
        return [event_id for _, event_id, _ in jobs]

    async def drop_events(self, items: Sequence[tuple[int, int, str | None]]) -> None:
        """Take the waiting jobs of (event id, attempts, kind) out of the queue, in one round trip: a round that
        claimed these events does their work, so their own jobs would only find it done. Best effort: a job left
        behind (Redis failed, or it had already started) stops after one read (app.jobs.tasks.run_event)."""
        if not items:
            return
        by_queue: dict[str, list[str]] = {}
        for event_id, attempts, kind in items:
            by_queue.setdefault(queue_for(kind), []).append(event_job_id(event_id, attempts))
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for queue, job_ids in by_queue.items():
                    pipe.zrem(queue, *job_ids)
                    pipe.delete(*(job_key_prefix + job_id for job_id in job_ids))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("queue.drop.failed", events=len(items), error=type(exc).__name__)

    async def enqueue_reconcile(self, run_id: int) -> bool:
        try:
            await self.redis.enqueue_job("reconcile_job", run_id, _job_id=f"reconcile:{run_id}")
        except (RedisError, OSError) as exc:
            log.warning("queue.enqueue.failed", run_id=run_id, error=type(exc).__name__)
            return False
        return True

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    async def depth(self) -> int | None:
        try:
            return int(await self.redis.zcard(DEFAULT_QUEUE)) + int(await self.redis.zcard(SLOW_QUEUE))
        except (RedisError, OSError):
            return None

    async def close(self) -> None:
        await self.redis.aclose()
