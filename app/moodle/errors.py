"""Typed errors for every way a Moodle web-service call can fail.

Moodle answers errors with HTTP 200 and a JSON body ``{"exception", "errorcode", "message"}``
(``debuginfo`` only with site debugging on). Exception class names moved to
``core\\exception\\...`` in 4.5, so classification keys on ``errorcode`` alone.

    MoodleError
    ├── MoodleTransientError        retry later: network, timeout, 5xx, maintenance, non-JSON body
    └── MoodlePermanentError        a person must fix something; never retried blindly
        ├── MoodleAuthError         invalidtoken, accessexception, wsaccessusersuspended, REST disabled (403)
        ├── MoodleInvalidParameter  invalidparameter, invalidextparam, codingerror, setting locks
        ├── MoodleRecordMissing     invalidrecord (4.3), invalidrecordunknown (5.0), invaliduser, ...
        ├── MoodleConflict          shortnametaken, courseidnumbertaken, categoryidnumbertaken
        ├── MoodlePasswordPolicy    the errorcode is the site's HTML password-policy text (recording 014)
        └── MoodleInvalidResponse   invalidresponse: the call may have been partly applied (recording 038)
"""

from __future__ import annotations

import re
from typing import Any

_TAG = re.compile(r"<[^>]+>")


class MoodleError(Exception):
    """Base of every Moodle failure; carries the call and what Moodle said."""

    transient: bool = False

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
        self.message = message
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

    def as_moodle_body(self) -> dict[str, Any]:
        """The error as Moodle's own JSON body."""
        body: dict[str, Any] = {
            "exception": self.exception or "moodle_exception",
            "errorcode": self.errorcode,
            "message": self.message,
        }
        if self.debuginfo:
            body["debuginfo"] = self.debuginfo
        return body


class MoodleTransientError(MoodleError):
    """The call did not go through now; the same call may succeed later."""

    transient = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class MoodlePermanentError(MoodleError):
    """Moodle refused the call; repeating it unchanged will not help."""


class MoodleAuthError(MoodlePermanentError):
    """The token is wrong, lacks a function, or the REST protocol is off."""


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
# Moodle's database layer failing to connect is an outage, not bad data.
TRANSIENT_CODES = frozenset({"dbconnectionfailed", "sitemaintenance"})


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
