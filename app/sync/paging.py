"""Walking large sets a page at a time, and bounded concurrency: what keeps a long run's memory flat."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from sqlalchemy import select
from sqlmodel import SQLModel

from app.db.engine import SessionFactory

T = TypeVar("T")
M = TypeVar("M", bound=SQLModel)


async def keyset_pages(sessions: SessionFactory, model: type[M], key: str, size: int) -> AsyncIterator[list[M]]:
    """The rows of ``model`` in pages ordered by its column ``key`` (unique, an integer); one page held at a time."""
    column = getattr(model, key)
    after: int | None = None
    while True:
        query = select(model).order_by(column).limit(size)
        if after is not None:
            query = query.where(column > after)
        async with sessions() as s:
            page = list((await s.execute(query)).scalars())
        if page:
            yield page
        if len(page) < size:
            return
        after = getattr(page[-1], key)


async def chunks(items: AsyncIterator[T], size: int) -> AsyncIterator[list[T]]:
    """The items in lists of ``size`` (the last one shorter)."""
    chunk: list[T] = []
    async for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def bounded(jobs: Sequence[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Run the jobs at most ``limit`` at a time; results in the jobs' order. The first failure cancels the rest."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    tasks = [asyncio.ensure_future(one(job)) for job in jobs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
