"""Benchmark 2b (issue 22), backlog drain: benchmark 2's 30,200 events (10,000 contacts, 200 course dates, 20,000
registrations) accepted while processing is paused (``POST /api/pause``), then resumed (``POST /api/resume``): the
time from the resume until every user, course and enrolment is in the Moodle fake (20 ms a call + 0.5 ms an item),
against the fake's own minimum for the writes alone (every write at the largest batch, ``max_in_flight`` calls at a
time). Goal: within 1.5x, with at most 0.05 Moodle calls per user and per enrolment. One API and one worker process,
real PostgreSQL and Redis. The ingest is not timed here: benchmark 1 and the live first sync (benchmark 2) time it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import (
    TOKENS,
    api_and_worker,
    cpu_seconds,
    fresh_stores,
    machine_busy_seconds,
    postgres_cpu_seconds,
    profiled,
)
from bench.fakes import Served
from bench.first_sync import (
    DEADLINE_SECONDS,
    ENROL_FUNCTIONS,
    SCALE,
    USER_FUNCTIONS,
    Delivered,
    Size,
    Watched,
    calls_floor,
    coursesales_fake,
    deliver_all,
    fake_minimum,
    migrate,
    moodle_fake,
    moodle_limits,
    sync_env,
    watch,
)


@dataclass
class Drained:
    delivered: Delivered
    resumed_at: float
    watched: Watched
    calls_before: int  # Moodle calls made while paused: none is the rule
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds used from the resume to the last effect

    @property
    def seconds(self) -> float | None:
        return None if self.watched.done_at is None else self.watched.done_at - self.resumed_at


async def control(port: int, action: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        r = await client.post(f"/api/{action}", headers={"Authorization": f"Bearer {TOKENS['api']}"})
        r.raise_for_status()


async def paused_then_resumed(
    port: int,
    moodle: Any,
    size: Size,
    *,
    beside: Callable[[asyncio.Event], Awaitable[None]] | None = None,
    worker_pid: int | None = None,
) -> Drained:
    """Pause, deliver every event (each stored, none run), resume, and watch the Moodle fake until the backlog is in
    it. ``beside``: work started at the resume (benchmark 7's other tenant), told to stop once the backlog is in.
    ``worker_pid``: the worker whose CPU (and this machine's PostgreSQL's) the drain's figures report."""
    await control(port, "pause")
    delivered = await deliver_all(port, size, time.monotonic() + DEADLINE_SECONDS)
    calls_before = len(moodle.calls)
    drained = asyncio.Event()
    side = asyncio.create_task(beside(drained)) if beside is not None else None
    before = _cpu(worker_pid)
    resumed_at = time.monotonic()
    with profiled(worker_pid):
        await control(port, "resume")
        watched = await watch(moodle, size, resumed_at + DEADLINE_SECONDS)
    after = _cpu(worker_pid)
    drained.set()
    if side is not None:
        await side
    used = {name: after[name] - before[name] for name in after if name in before}
    return Drained(delivered, resumed_at, watched, calls_before, used)


def _cpu(worker_pid: int | None) -> dict[str, float]:
    if worker_pid is None:
        return {}
    seconds = {"worker": cpu_seconds(worker_pid)}
    if (postgres := postgres_cpu_seconds()) is not None:
        seconds["PostgreSQL"] = postgres
    # The Moodle and CourseSales fakes serve from this process's threads.
    seconds["the fakes"] = time.process_time()
    seconds["the machine"] = machine_busy_seconds()
    return seconds


def drain_rows(benchmark: str, size: Size, drained: Drained, calls: list[tuple[str, dict[str, Any]]]) -> list[dict]:
    batch, in_flight = moodle_limits()
    minimum = fake_minimum(size)
    by_function = Counter(name for name, _ in calls)
    user_calls = sum(n for f, n in by_function.items() if f in USER_FUNCTIONS)
    enrol_calls = sum(n for f, n in by_function.items() if f in ENROL_FUNCTIONS)
    detail = ", ".join(f"{f} {n}" for f, n in sorted(by_function.items()))
    what = f"{size.contacts} contacts, {size.course_dates} course dates, {size.registrations} registrations"
    seconds = drained.seconds
    if seconds is None:
        value, verdict = "", f"NOT DONE in {DEADLINE_SECONDS:.0f} s: {drained.watched.effects.describe()}"
    else:
        value = f"{seconds:.1f} s"
        ratio = seconds / minimum
        verdict = (
            f"{ratio:.2f}x the fake's minimum of {minimum:.1f} s (goal <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'})"
        )
    user_rate, enrol_rate = user_calls / size.contacts, enrol_calls / size.registrations
    cpu = ", ".join(
        f"{name} {used:.1f} s ({used / size.deliveries * 1000:.2f} ms an event)" for name, used in drained.cpu.items()
    )
    calls_met = "met" if max(user_rate, enrol_rate) <= 0.05 else "NOT met"
    return [
        {
            "benchmark": benchmark,
            "case": f"resume -> every effect in Moodle: {size.deliveries} events ({what}) accepted while paused",
            "req/s": value,
            "errors": f"{verdict}; {drained.calls_before} Moodle calls while paused"
            + (f"; CPU from the resume to the last effect: {cpu}" if cpu else ""),
        },
        {
            "benchmark": benchmark,
            "case": f"Moodle calls per user / per enrolment (batch {batch}, {in_flight} in flight)",
            "req/s": f"{user_rate:.3f} / {enrol_rate:.3f}",
            "errors": f"goal <= 0.05 each: {calls_met}; our calls charged as the fake charges: "
            f"{calls_floor(calls):.1f} s; {detail}",
        },
    ]


def run() -> list[dict[str, Any]]:
    migrate()
    size = Size.scaled(SCALE)
    asyncio.run(fresh_stores())
    moodle = moodle_fake()
    with Served(moodle) as moodle_served, Served(coursesales_fake(size)) as cs:
        env = sync_env(moodle_served.url, cs.url)
        with api_and_worker(env, "drain") as (port, _, worker):
            drained = asyncio.run(paused_then_resumed(port, moodle, size, worker_pid=worker.pid))
    return drain_rows("backlog drain", size, drained, list(moodle.calls))


if __name__ == "__main__":
    from bench.common import table

    print(table(run()))
