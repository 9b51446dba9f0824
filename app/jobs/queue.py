"""Enqueueing: job ids, JSON serialisation, and a Redis outage that never loses an accepted event."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import structlog
from arq.connections import ArqRedis, RedisSettings
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import UnixDomainSocketConnection
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

DEFAULT_QUEUE = "sync:default"
# Course creation and duplication (a whole backup and restore in Moodle): own queue, own long timeout,
# so that a killed worker's quick jobs are not held back by the slow ones' recovery delay.
SLOW_QUEUE = "sync:slow"
SLOW_KINDS = frozenset({"course_date.changed", "course.sync"})


def queue_for(kind: str | None) -> str:
    return SLOW_QUEUE if kind in SLOW_KINDS else DEFAULT_QUEUE


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


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
        try:
            await self.redis.enqueue_job(
                "process_event",
                event_id,
                _job_id=event_job_id(event_id, attempts),
                _queue_name=queue_for(kind),
                _defer_until=defer_until,
            )
        except (RedisError, OSError) as exc:
            log.warning("queue.enqueue.failed", event_id=event_id, error=type(exc).__name__)
            return False
        return True

    async def enqueue_reconcile(self, run_id: int) -> bool:
        try:
            await self.redis.enqueue_job("reconcile_job", run_id, _job_id=f"reconcile:{run_id}")
        except (RedisError, OSError) as exc:
            log.warning("queue.enqueue.failed", run_id=run_id, error=type(exc).__name__)
            return False
        return True

    async def enqueue_events(self, items: list[tuple[int, int, str | None]]) -> list[int]:
        """Enqueue (event id, attempts, kind) items; return the ids that reached the queue."""
        done: list[int] = []
        for event_id, attempts, kind in items:
            if await self.enqueue_event(event_id, attempts, kind=kind):
                done.append(event_id)
            else:
                break  # Redis is down: the sweeper will queue the rest
        return done

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
