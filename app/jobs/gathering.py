"""A gathering round's wait: runners whose Moodle calls take arrays (app.jobs.runners.GATHERED) let a burst that is
still arriving fill their batch, up to LINGER in LINGER_STEP steps, rather than send what came in the last few
milliseconds."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import claim

LINGER = 1.0
LINGER_STEP = 0.1


async def await_batch(s: AsyncSession, kinds: list[str], limit: int) -> None:
    """Return at once when nothing or a full batch waits; else as soon as a step brings nothing new, or at LINGER."""
    deadline = time.monotonic() + LINGER
    seen = await claim.waiting(s, kinds, limit)
    while 0 < seen < limit and time.monotonic() < deadline:
        await asyncio.sleep(LINGER_STEP)
        before, seen = seen, await claim.waiting(s, kinds, limit)
        if seen <= before:
            return
