"""Group commit: deliveries accepted at the same moment share one transaction, one commit and one enqueue.

A webhook is answered only once its event is committed. One request at a time, that is one transaction, one
commit (an fsync) and one enqueue each; under load the requests instead queue here, and whichever batch is
waiting goes in as soon as the one before it has committed. An idle service pays nothing extra: a lone
delivery goes straight in as a batch of one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

import structlog
from sqlalchemy.exc import DBAPIError

from app.db import inbox
from app.db.engine import SessionFactory
from app.db.inbox import BodyMismatch, Delivery, Stored
from app.db.models import EventStatus
from app.metrics import INTAKE_BATCH

log = structlog.get_logger(__name__)

# (event id, kind) of the events just made -> whether their jobs reached the queue.
Enqueue = Callable[[list[tuple[int, str]]], Awaitable[bool]]
MAX_BATCH = 500


class GroupCommit:
    """Accepts deliveries for the inbox; ``accept`` returns once the delivery's event is committed."""

    def __init__(self, sessions: SessionFactory, enqueue: Enqueue, *, max_batch: int = MAX_BATCH) -> None:
        self._sessions = sessions
        self._enqueue = enqueue
        self._max_batch = max_batch
        self._pending: list[tuple[Delivery, asyncio.Future[Stored | BodyMismatch]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def accept(self, delivery: Delivery) -> Stored:
        """The stored event; raises BodyMismatch for a known delivery id with another body."""
        future: asyncio.Future[Stored | BodyMismatch] = asyncio.get_running_loop().create_future()
        self._pending.append((delivery, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._drain())
        result = await future
        if isinstance(result, BodyMismatch):
            raise result
        return result

    async def close(self) -> None:
        """Wait for what is pending to be committed (at shutdown)."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            INTAKE_BATCH.observe(len(batch))
            try:
                results = await self._commit([d for d, _ in batch])
            except Exception as exc:
                if len(batch) == 1:  # e.g. the database is down: the request gets the error
                    _settle(batch[0][1], exc)
                    continue
                # One bad row must not fail the others: each goes in alone, with its own answer.
                log.warning("intake.batch.failed", size=len(batch), error=type(exc).__name__)
                for delivery, future in batch:
                    await self._commit_alone(delivery, future)
            else:
                for (_, future), result in zip(batch, results, strict=True):
                    _settle(future, result)

    async def _commit_alone(self, delivery: Delivery, future: asyncio.Future[Stored | BodyMismatch]) -> None:
        try:
            (result,) = await self._commit([delivery])
        except Exception as exc:
            _settle(future, exc)
        else:
            _settle(future, result)

    async def _commit(self, deliveries: Sequence[Delivery]) -> list[Stored | BodyMismatch]:
        try:
            return await self._commit_once(deliveries)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            # A pooled connection the database closed (a restart): once more, on a fresh one. Had the insert
            # committed before the line dropped, its rows now answer as repeats and the sweeper queues them.
            log.warning("intake.reconnect", error=type(exc.orig).__name__)
            return await self._commit_once(deliveries)

    async def _commit_once(self, deliveries: Sequence[Delivery]) -> list[Stored | BodyMismatch]:
        async with self._sessions() as s:
            # The insert is one statement: run on its own (autocommit) it is durable when it returns, without the
            # round trips of BEGIN and COMMIT; the look-up of repeats after it reads committed rows.
            await s.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            results = await inbox.accept_many(s, deliveries)
        made = [
            (r.event_id, d.kind)
            for d, r in zip(deliveries, results, strict=True)
            if isinstance(r, Stored) and r.created and r.status == EventStatus.queued
        ]
        if not made or await self._enqueue(made):
            return results
        # Redis is down: the events wait as accepted, and the sweeper queues them once it is back.
        async with self._sessions() as s:
            await inbox.unqueue(s, [event_id for event_id, _ in made])
            await s.commit()
        ids = {event_id for event_id, _ in made}
        return [
            replace(r, status=EventStatus.accepted) if isinstance(r, Stored) and r.event_id in ids else r
            for r in results
        ]


def _settle(future: asyncio.Future[Stored | BodyMismatch], outcome: Stored | BodyMismatch | BaseException) -> None:
    if future.done():  # the request went away (client disconnected); its event is committed all the same
        return
    if isinstance(outcome, BaseException) and not isinstance(outcome, BodyMismatch):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
