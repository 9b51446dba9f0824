"""Typed errors for every way a CourseSales call can fail.

CourseSales publishes no error format: how a refused call looks is an assumption (app/coursesales/assumptions.py).
The login travels in the URL's query string, so no message may carry the URL, the password or an httpx message.
Every error keeps the contract of app/upstream.py (transient, retry_after, maybe_sent, unusable); CourseSales never
says how long to wait, so ``retry_after`` is always None.

    UpstreamError (app/upstream.py)
    └── CourseSalesError                     .operation, .status (HTTP status, when there was an answer)
        ├── CourseSalesTransientError        retry later: network, timeout, HTTP 5xx/429, non-JSON body
        │                                    .maybe_sent: False only when the call certainly never reached CourseSales
        │                                    (then .unusable UNREACHABLE: CourseSales as a whole cannot be reached)
        └── CourseSalesPermanentError        a person must fix something; never retried blindly
            ├── CourseSalesAuthError         the login was refused (error answer naming the login, HTTP 401/403);
            │                                .unusable CREDENTIALS: no call can succeed until it is fixed
            ├── CourseSalesRefused           any other error answer, HTTP 4xx, a redirect, a step that says false
            └── CourseSalesUnexpectedAnswer  JSON of a shape we cannot decode (no meta map, missing part, bad ids)
"""

from __future__ import annotations

from app.upstream import COURSESALES, Unusable, UpstreamError


class CourseSalesError(UpstreamError):
    """Base of every CourseSales failure; carries the operation and the HTTP status."""

    upstream = COURSESALES

    def __init__(self, message: str, *, operation: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.operation = operation
        self.status = status

    def __str__(self) -> str:
        where = f"{self.operation}: " if self.operation else ""
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{where}{self.message}{status}"


class CourseSalesTransientError(CourseSalesError):
    """The call did not go through now; the same call may succeed later.

    ``maybe_sent`` tells whether CourseSales may have received (and applied) the call: process steps cannot be
    read back, so a caller must not blindly repeat a step whose outcome is unknown.
    """

    transient = True
    maybe_sent: bool

    def __init__(self, message: str, *, maybe_sent: bool, operation: str = "", status: int | None = None) -> None:
        super().__init__(message, operation=operation, status=status)
        self.maybe_sent = maybe_sent

    @property
    def unusable(self) -> Unusable | None:
        # Never sent (no connection, or a 429 refusing it unread): CourseSales cannot be used now, not this call.
        return None if self.maybe_sent else Unusable.UNREACHABLE


class CourseSalesPermanentError(CourseSalesError):
    """CourseSales refused the call or answered something we cannot use; repeating it unchanged will not help."""


class CourseSalesAuthError(CourseSalesPermanentError):
    """The web-services login (LoginUsername / LoginPassword) was refused."""

    @property
    def unusable(self) -> Unusable | None:
        return Unusable.CREDENTIALS


class CourseSalesRefused(CourseSalesPermanentError):
    """CourseSales answered with an error that is not about the login."""


class CourseSalesUnexpectedAnswer(CourseSalesPermanentError):
    """The answer is JSON but not of a shape we can decode: the API may have changed."""
