"""Fair intake: each registered tenant's deliveries a second, so that one sender cannot fill the inbox for everyone.

A token bucket per tenant that holds one second's worth and refills continuously, kept in Redis when the API has
its queue there: one limit for every API process and host of the deployment (`moodle-sync api --workers N`, or
several hosts behind one address), at one small script call a delivery of a registered tenant (the default tenant
has no limit and makes none). While Redis does not answer, each process keeps the bucket itself for a few seconds
at a time, as when there is no queue. A delivery past it is answered 429 with Retry-After before anything is read or stored; the sender sends
it again, so nothing answered 2xx is ever lost.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

# KEYS[1]: the tenant's bucket; ARGV[1]: deliveries a second. The bucket's time is Redis's own (one clock for every
# process); it is dropped after ten idle seconds. Returns 0 (taken) or the whole seconds to wait.
_TAKE = """
local rate = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local kept = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(kept[1]) or rate
local at = tonumber(kept[2]) or now
tokens = math.min(rate, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.max(1, math.ceil((1 - tokens) / rate))
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], 10)
return wait
"""
KEY = "sync:intake:{}"
LOCAL_SECONDS = 5.0


@dataclass
class _Bucket:
    tokens: float
    at: float


class IntakeLimit:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets: dict[int, _Bucket] = {}
        self._clock = clock
        self._script: Any = None
        self._redis: Any = None
        self._local_until = -math.inf  # after a failure, this process's bucket alone until then

    async def admit(self, tenant_id: int, per_second: int, redis: Any | None) -> int:
        """``wait``, on the deployment's bucket in ``redis`` (an ArqRedis), or on this process's own without one,
        and for LOCAL_SECONDS after it failed to answer (a delivery does not wait for a Redis that hangs, each)."""
        if per_second <= 0:
            return 0
        if redis is not None and self._clock() >= self._local_until:
            try:
                if self._redis is not redis:
                    self._redis, self._script = redis, redis.register_script(_TAKE)
                return int(await self._script(keys=[KEY.format(tenant_id)], args=[per_second]))
            except (RedisError, OSError) as exc:  # a queue that does not answer must not refuse deliveries
                log.warning("intake.limit.local", error=type(exc).__name__, seconds=LOCAL_SECONDS)
                self._local_until = self._clock() + LOCAL_SECONDS
        return self.wait(tenant_id, per_second)

    def wait(self, tenant_id: int, per_second: int) -> int:
        """0 when a delivery of this tenant may come in now (it takes its place), else the seconds to wait."""
        if per_second <= 0:
            return 0
        now = self._clock()
        bucket = self._buckets.get(tenant_id)
        if bucket is None:
            bucket = self._buckets[tenant_id] = _Bucket(float(per_second), now)
        bucket.tokens = min(float(per_second), bucket.tokens + (now - bucket.at) * per_second)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0
        return max(1, math.ceil((1 - bucket.tokens) / per_second))
