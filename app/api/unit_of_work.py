"""One transaction owner for the operator endpoints: commit, then enqueue, then mark queued.

An endpoint changes things through ``uow.session`` and names the events whose jobs should start (``uow.queue``) or
the work to start once the change is stored (``uow.after_commit``). The dependency finishes the unit when the
endpoint returns, before the answer is sent: a commit that fails is the request's error, never a false 200. An
endpoint whose answer must show the state after the commit (a replayed event now "queued") calls
``await uow.complete()`` itself first; completing twice is harmless. An exception rolls everything back and
enqueues nothing (polar's enqueue-after-commit is the model: a job never starts for a change that was not stored).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import ACTOR, RuntimeDep
from app.db import inbox
from app.db.models import Event

if TYPE_CHECKING:
    from app.jobs.queue import Queue


class UnitOfWork:
    def __init__(self, session: AsyncSession, queue: Queue | None, *, actor: str = "api") -> None:
        self.session = session
        # Who the audit trail names: "api" for the ops token, the operator's name for the console (which calls the
        # same endpoint functions with a unit of its own).
        self.actor = actor
        self._queue = queue
        self._events: list[Event] = []
        self._after: list[Callable[[], Awaitable[object]]] = []

    def queue(self, events: Iterable[Event]) -> None:
        """Start these events' jobs once the change is committed."""
        self._events.extend(events)

    def after_commit(self, action: Callable[[], Awaitable[object]]) -> None:
        """Run ``action`` once the change is committed (e.g. release the work a pause held)."""
        self._after.append(action)

    async def complete(self) -> list[int]:
        """Commit, then enqueue the named events and mark them queued, then run the after-commit actions; the ids
        now in the queue. An enqueue that fails leaves the events accepted, for the sweeper."""
        await self.session.commit()
        events, self._events = self._events, []
        after, self._after = self._after, []
        queued: list[int] = []
        if events and self._queue is not None:
            queued = await self._queue.enqueue_events([(e.id, e.attempts, e.kind) for e in events])
            if queued:
                await inbox.mark_queued(self.session, queued)
                await self.session.commit()
        for action in after:
            await action()
        return queued


async def request_actor(request: Request) -> str:
    """Who the audit names for an /api change: "hub" when the hub token acts on a tenant (app.api.tenant_routing),
    else "api" (the tenant's own ops token); the tenant is the rows' own."""
    return str(request.scope.get(ACTOR, "api"))


async def unit_of_work(
    rt: RuntimeDep, actor: Annotated[str, Depends(request_actor)] = "api"
) -> AsyncIterator[UnitOfWork]:
    async with rt.sessions() as session:
        uow = UnitOfWork(session, rt.queue, actor=actor)
        yield uow  # an exception from the endpoint ends here: nothing committed, nothing enqueued
        await uow.complete()


# scope="function": finished when the endpoint returns, before the answer is sent.
UnitOfWorkDep = Annotated[UnitOfWork, Depends(unit_of_work, scope="function")]
