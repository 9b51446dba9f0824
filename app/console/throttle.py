"""Wrong passwords slow further tries down: five for one name, or from one address, within a minute, and that name
or address waits out the rest of the minute, its right password included.

The counts live in Redis, so every API process sees the same ones; the keys hold keyed digests, never a name or an
address. Without Redis (down, or a test without a queue) the counts fall back to this process's memory: the limit
then holds per process, which is still a limit.
"""

from __future__ import annotations

import time

import structlog

from app.runtime import Runtime

log = structlog.get_logger(__name__)

MAX_FAILURES = 5
WINDOW_SECONDS = 60
PREFIX = "csms:console:sign-in-failures:"

_local: dict[str, tuple[int, float]] = {}  # key -> (failures, window end), when Redis cannot be used


def _keys(rt: Runtime, name: str, address: str) -> list[str]:
    # A name is counted in its tenant (each tenant's console has its own operators); an address across them all.
    who = f"name:{name}" if rt.tenant_id == 0 else f"name:{rt.tenant_id}:{name}"
    return [PREFIX + rt.vault.digest(who)[:32], PREFIX + rt.vault.digest(f"address:{address}")[:32]]


async def wait_seconds(rt: Runtime, name: str, address: str) -> int:
    """How long this name and address must wait before their next try (0: they may try now)."""
    keys = _keys(rt, name, address)
    waits = [0]
    if rt.queue is not None:
        try:
            redis = rt.queue.redis
            for key in keys:
                count = await redis.get(key)
                if count is not None and int(count) >= MAX_FAILURES:
                    waits.append(max(int(await redis.ttl(key)), 1))
            return max(waits)
        except Exception as exc:
            log.warning("console.throttle_local", error=type(exc).__name__)
    now = time.monotonic()
    for key in keys:
        failures, until = _local.get(key, (0, 0.0))
        if until > now and failures >= MAX_FAILURES:
            waits.append(int(until - now) + 1)
    return max(waits)


async def failed(rt: Runtime, name: str, address: str) -> None:
    """Count one wrong password against both the name and the address; the window starts at the first."""
    keys = _keys(rt, name, address)
    if rt.queue is not None:
        try:
            async with rt.queue.redis.pipeline(transaction=True) as pipe:
                for key in keys:
                    pipe.incr(key)
                    pipe.expire(key, WINDOW_SECONDS, nx=True)
                await pipe.execute()
            return
        except Exception as exc:
            log.warning("console.throttle_local", error=type(exc).__name__)
    now = time.monotonic()
    for key in keys:
        failures, until = _local.get(key, (0, 0.0))
        _local[key] = (failures + 1, until) if until > now else (1, now + WINDOW_SECONDS)
    if len(_local) > 10_000:  # bounded: the expired go first
        for key in [k for k, (_, until) in _local.items() if until <= now]:
            del _local[key]
