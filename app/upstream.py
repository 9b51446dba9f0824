"""The contract every upstream error keeps, whichever upstream raised it.

The jobs layer decides retries (app/jobs/runners.py) and upstream-wide faults (app/sync/upstreams.py) from these
answers alone, never from a message or a class of one tree, so a new error kind only has to answer them right:

    UpstreamError
    │   .upstream     "moodle" or "coursesales"
    │   .transient    True: the same call may succeed later, so it is retried with backoff
    │   .retry_after  seconds the upstream asked us to wait (Retry-After), or None when it did not say
    │   .maybe_sent   transient errors: True when the call may have reached the upstream and been applied, False
    │                 only when it certainly never left; None on permanent errors, which are never retried blindly
    │   .unusable     an Unusable when the upstream AS A WHOLE cannot be used now (work waits for it instead of
    │                 failing), None when the failure is this call's own
    ├── MoodleError          the Moodle tree: app/moodle/errors.py
    └── CourseSalesError     the CourseSales tree: app/coursesales/errors.py

``unusable`` is an attribute, not a marker class: Moodle's maintenance page is a plain transient error told apart
only by its HTTP 503, and a CourseSales transient error is unreachable only when it was never sent.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Final, Literal

import httpx

MOODLE: Final = "moodle"
COURSESALES: Final = "coursesales"
Upstream = Literal["moodle", "coursesales"]
# httpx failures raised before a single byte of the request left: the call certainly did not reach the upstream.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)


class Unusable(StrEnum):
    """Why an upstream as a whole cannot be used right now; app/sync/upstreams.py maps each to a state and a fix."""

    UNREACHABLE = "unreachable"  # the network failed on the way to it
    MAINTENANCE = "maintenance"  # it says it is being upgraded or is down for maintenance
    CREDENTIALS = "credentials"  # it refuses our token or login


class UpstreamError(Exception):
    """Base of every upstream failure: answers what the jobs layer asks, whatever the upstream."""

    upstream: ClassVar[Upstream]
    transient: ClassVar[bool] = False
    # Instance values where a subclass knows them; these defaults hold for every permanent error.
    retry_after: float | None = None
    maybe_sent: bool | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def unusable(self) -> Unusable | None:
        """Why the whole upstream is unusable now, or None when only this call failed."""
        return None
