"""Fair intake: each registered tenant's deliveries a second, so that one sender cannot fill the inbox for everyone.

A token bucket per tenant, in each API process (no round trip on the hot path): it holds one second's worth and
refills continuously. A delivery past it is answered 429 with Retry-After before anything is read or stored; the
sender sends it again, so nothing answered 2xx is ever lost.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class IntakeLimit:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets: dict[int, _Bucket] = {}
        self._clock = clock

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
