"""Typed errors for every way a Moodle web-service call can fail.

Moodle answers errors with HTTP 200 and a JSON body ``{"exception", "errorcode", "message"}``
(``debuginfo`` only with site debugging on). Exception class names moved to
``core\\exception\\...`` in 4.5, so classification keys on ``errorcode`` alone.
Every error keeps the contract of app/upstream.py (transient, retry_after, maybe_sent, unusable):

    UpstreamError (app/upstream.py)
    └── MoodleError                 .function, .errorcode, .status; .unusable MAINTENANCE on HTTP 503 or sitemaintenance
        ├── MoodleTransientError    retry later: network, timeout, 5xx, maintenance, non-JSON body; .retry_after
        │                           .maybe_sent False only for a connection never made; .unusable UNREACHABLE when
        │                           the network failed (not a timeout): Moodle as a whole cannot be reached
        └── MoodlePermanentError    a person must fix something; never retried blindly
            ├── MoodleAuthError         invalidtoken, accessexception, wsaccessusersuspended, REST disabled (403);
            │                           .unusable CREDENTIALS: the token cannot be used for any call
            ├── MoodleInvalidParameter  invalidparameter, invalidextparam, codingerror, setting locks
            ├── MoodleRecordMissing     invalidrecord (4.3), invalidrecordunknown (5.0), invaliduser, ...
            ├── MoodleConflict          shortnametaken, courseidnumbertaken, categoryidnumbertaken
            ├── MoodlePasswordPolicy    the errorcode is the site's HTML password-policy text (recording 014)
            └── MoodleInvalidResponse   invalidresponse: the call may have been partly applied (recording 038)
"""

from __future__ import annotations

import re
from typing import Any

from app.upstream import MOODLE, Unusable, UpstreamError

_TAG = re.compile(r"<[^>]+>")


class MoodleError(UpstreamError):
    """Base of every Moodle failure; carries the call and what Moodle said."""

    upstream = MOODLE

    def __init__(
        self,
        message: str,
        *,
        function: str = "",
        errorcode: str = "",
        exception: str = "",
        debuginfo: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.function = function
        self.errorcode = errorcode
        self.exception = exception
        self.debuginfo = debuginfo
        self.status = status

    def __str__(self) -> str:
        where = f"{self.function}: " if self.function else ""
        code = f" [{self.errorcode}]" if self.errorcode and self.errorcode != self.message else ""
        extra = f" ({self.debuginfo})" if self.debuginfo else ""
        return f"{where}{self.message}{code}{extra}"

    @property
    def unusable(self) -> Unusable | None:
        # Decided by status and errorcode, not class: the maintenance page (HTTP 503) has no errorcode at all.
        if self.status == 503 or self.errorcode in MAINTENANCE_CODES:
            return Unusable.MAINTENANCE
        return None


class MoodleTransientError(MoodleError):
    """The call did not go through now; the same call may succeed later.

    ``maybe_sent`` defaults to True: only the client knows that a connection was never made.
    """

    transient = True
    maybe_sent: bool

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        maybe_sent: bool = True,
        unreachable: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after
        self.maybe_sent = maybe_sent
        self.unreachable = unreachable

    @property
    def unusable(self) -> Unusable | None:
        return super().unusable or (Unusable.UNREACHABLE if self.unreachable else None)


class MoodlePermanentError(MoodleError):
    """Moodle refused the call; repeating it unchanged will not help."""


class MoodleAuthError(MoodlePermanentError):
    """The token is wrong, lacks a function, or the REST protocol is off."""

    @property
    def unusable(self) -> Unusable | None:
        # error_from_body turns every AUTH_CODES errorcode into this class, so the class alone says "token".
        return super().unusable or Unusable.CREDENTIALS


class MoodleInvalidParameter(MoodlePermanentError):
    """Moodle rejected a parameter; the reason is only in debuginfo, when debugging is on."""


class MoodleRecordMissing(MoodlePermanentError):
    """A user, course or category the call names does not exist (or is deleted)."""


class MoodleConflict(MoodlePermanentError):
    """A unique value (short name, idnumber) is already used by another record."""


class MoodlePasswordPolicy(MoodlePermanentError):
    """The password fails the site's password policy."""

    @property
    def rules(self) -> list[str]:
        """The failed rules as plain sentences."""
        return [p.strip() for p in _TAG.split(self.errorcode) if p.strip()]


class MoodleInvalidResponse(MoodlePermanentError):
    """Moodle could not encode its answer; some items of the call may have been applied."""


# The token cannot be used at all: revoked, its user suspended (recording 156) or deleted, its service disabled.
AUTH_CODES = frozenset(
    {
        "invalidtoken", "accessexception", "sitemaintenance_denied", "wsaccessusersuspended", "wsaccessuserdeleted",
        "wsaccessusernologin", "wsaccessuserunconfirmed", "wsaccessuserexpired", "servicenotavailable",
        "usernotfullysetup", "forcepasswordchangenotice",
    }
)  # fmt: skip
INVALID_CODES = frozenset(
    {
        "invalidparameter",
        "invalidextparam",
        "codingerror",
        "setting_locked_by_permission",
        "wsusercannotassign",
        "errorcatcontextnotvalid",
        "unknowcategory",
        "usernotenroled",
        "nocriteriaset",
        "guestsarenotallowed",
    }
)
MISSING_CODES = frozenset(
    {
        "invalidrecord",
        "invalidrecordunknown",
        "invaliduser",
        "invaliduserid",
        "invalidcourseid",
        "userdeleted",
    }
)
CONFLICT_CODES = frozenset({"shortnametaken", "courseidnumbertaken", "categoryidnumbertaken"})
RESPONSE_CODES = frozenset({"invalidresponse"})
# The site is being upgraded or an admin switched maintenance mode on: Moodle as a whole, not this call.
MAINTENANCE_CODES = frozenset({"sitemaintenance"})
# Moodle's database layer failing to connect is an outage, not bad data.
TRANSIENT_CODES = frozenset({"dbconnectionfailed"}) | MAINTENANCE_CODES


def error_from_body(body: dict[str, Any], *, function: str = "") -> MoodleError:
    """Turn a Moodle ``exception`` body into the matching typed error."""
    code = str(body.get("errorcode") or "")
    kw: dict[str, Any] = {
        "function": function,
        "errorcode": code,
        "exception": str(body.get("exception") or ""),
        "debuginfo": body.get("debuginfo"),
        "status": 200,
    }
    message = str(body.get("message") or code)
    if code in TRANSIENT_CODES:
        return MoodleTransientError(message, **kw)
    if code.startswith("<"):  # the site policy text itself is the errorcode (recording 014)
        return MoodlePasswordPolicy(message, **kw)
    for codes, cls in (
        (AUTH_CODES, MoodleAuthError),
        (INVALID_CODES, MoodleInvalidParameter),
        (MISSING_CODES, MoodleRecordMissing),
        (CONFLICT_CODES, MoodleConflict),
        (RESPONSE_CODES, MoodleInvalidResponse),
    ):
        if code in codes:
            return cls(message, **kw)
    return MoodlePermanentError(message, **kw)
