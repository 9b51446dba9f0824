"""A gathering round's wait: runners whose Moodle calls take arrays (app.jobs.runners.GATHERED) let a burst that is
still arriving fill their batch, up to LINGER in LINGER_STEP steps, rather than send what came in the last few
milliseconds."""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

from sqlalchemy import Integer, bindparam, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.models import Event, EventStatus

LINGER = 1.0
LINGER_STEP = 0.1


async def await_batch(s: AsyncSession, kinds: list[str], limit: int) -> None:
    """Return at once when nothing or a full batch waits; else as soon as a step brings nothing new, or at LINGER."""
    deadline = time.monotonic() + LINGER
    seen = await arrived(s, kinds, limit)
    while 0 < seen < limit and time.monotonic() < deadline:
        await asyncio.sleep(LINGER_STEP)
        before, seen = seen, await arrived(s, kinds, limit)
        if seen <= before:
            return


async def arrived(s: AsyncSession, kinds: list[str], limit: int) -> int:
    """Events of these kinds waiting for their first run, counted up to ``limit``."""
    return int((await s.execute(_counting(tuple(kinds)), {"limit": limit})).scalar_one())


@functools.lru_cache(maxsize=64)
def _counting(kinds: tuple[str, ...]) -> Any:
    """The count of one family's arrivals, made once (fixed lists, not a statement rendered again each round)."""
    waiting = (
        select(col(Event.id))
        .where(
            col(Event.kind).in_([literal(k) for k in kinds]),
            col(Event.status).in_([literal(str(EventStatus.accepted)), literal(str(EventStatus.queued))]),
        )
        .limit(bindparam("limit", type_=Integer))
        .subquery()
    )
    return select(func.count()).select_from(waiting)
