"""The one backoff schedule for transient failures, with jitter, up to a horizon."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

# Seconds before attempt n+1; the last step repeats until the horizon.
SCHEDULE = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)
JITTER = 0.2


def next_delay(attempts: int, *, retry_after: float | None = None) -> float:
    """Delay after ``attempts`` failed tries; honours Moodle's Retry-After when it is longer."""
    base = SCHEDULE[min(max(attempts, 1), len(SCHEDULE)) - 1]
    delay = base * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311 (jitter, not security)
    return max(delay, retry_after or 0.0)


def next_attempt(
    created_at: datetime, now: datetime, attempts: int, horizon_hours: float, **kw: float | None
) -> datetime | None:
    """When to try again, or None when the retry horizon has passed."""
    at = now + timedelta(seconds=next_delay(attempts, **kw))
    return None if at - created_at > timedelta(hours=horizon_hours) else at
