"""The pause between rounds of the workers' forever loops (sweeper, alerts, periodic reconcile)."""

from __future__ import annotations

import asyncio


async def pause(seconds: float) -> None:
    """Sleep until the next round, or end the loop if it was asked to stop while its round ran.

    A cancellation can be lost inside a round: on Python 3.11, ``asyncio.wait_for`` (under aiosmtplib's connect, for
    one) returns its result when the awaited call finishes just as the cancellation arrives, and a loop that catches
    ``Exception`` to outlive a failed round may also catch what a library made of one. The request stays counted on
    the task, so it is honoured here; otherwise the loop ran on and a worker's shutdown waited for it for good.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    await asyncio.sleep(seconds)
