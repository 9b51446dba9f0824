"""The workers' forever loops end when cancelled, even when a round lost the cancellation (Python 3.11's
``asyncio.wait_for`` does when the awaited call finishes as the cancellation arrives): a lost one made a worker's
shutdown, and once the suite, wait for good."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from app.jobs import probe, reconcile, sweeper
from app.notify import alerts
from app.runtime import Runtime

ROUND_STARTED: list[asyncio.Event] = []  # set by the round of the test running now


async def _lose_a_cancellation(*_args: Any, **_kw: Any) -> None:
    """A round that swallows the cancellation that reaches it, as a racing wait_for does."""
    ROUND_STARTED[-1].set()
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        pass


def _sweeper(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> Coroutine[Any, Any, None]:
    monkeypatch.setattr(sweeper, "sweep", _lose_a_cancellation)
    return sweeper.run_forever(rt)


def _alerts(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> Coroutine[Any, Any, None]:
    monkeypatch.setattr(alerts, "_watch", _lose_a_cancellation)
    return alerts.run_forever(rt, every_seconds=0.01)


def _reconcile(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> Coroutine[Any, Any, None]:
    rt.settings.reconcile.interval_minutes = 1
    monkeypatch.setattr(reconcile.leases, "acquire", _lose_a_cancellation)
    monkeypatch.setattr(reconcile, "pause", _no_pause_once())
    return reconcile.run_periodically(rt)


def _probe(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> Coroutine[Any, Any, None]:
    monkeypatch.setattr(probe, "probe_all", _lose_a_cancellation)
    return probe.run_forever(rt)


def _no_pause_once() -> Callable[[float], Coroutine[Any, Any, None]]:
    """The reconcile loop pauses first (minutes): let its first round start at once, then pause for real."""
    real, calls = reconcile.pause, []

    async def pause(seconds: float) -> None:
        calls.append(seconds)
        await (real(0) if len(calls) == 1 else real(seconds))

    return pause


@pytest.mark.parametrize(
    "loop", [_sweeper, _alerts, _reconcile, _probe], ids=["sweeper", "alerts", "reconcile", "probe"]
)
async def test_a_loop_ends_when_cancelled_even_if_its_round_lost_the_cancellation(
    loop: Callable[[Runtime, pytest.MonkeyPatch], Coroutine[Any, Any, None]],
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ROUND_STARTED.append(asyncio.Event())
    task = asyncio.create_task(loop(runtime, monkeypatch))
    # Cancelled inside its first round, not before it (a fixed sleep let a slow machine cancel first, testing nothing).
    await asyncio.wait_for(ROUND_STARTED[-1].wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), 5)
    assert task.cancelled()
