"""Who is signed in to the console: a signed session cookie, checked against the operator's row on every request,
and the CSRF token every form that changes something must carry.

The cookie (itsdangerous, keyed from SYNC_SECRET_KEY) holds the operator's name, their session version and the
session's CSRF token; it is HttpOnly, SameSite=Strict, scoped to /console, Secure when the request came over https
(as a trusted proxy says: ``api.trusted_proxies``), and expires after ``console.session_hours``. Removing an operator
or changing their password raises the version in the database, which ends every session signed with the old one.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select
from sqlmodel import col
from starlette.responses import Response

from app.api.deps import RuntimeDep, SessionDep
from app.db.accounts import Operator
from app.db.statuses import OperatorRole
from app.db.tenants import DEFAULT_TENANT_ID
from app.runtime import Runtime

COOKIE = "csms_console"
SIGN_IN_COOKIE = "csms_sign_in"  # the sign-in form's own CSRF token, before there is a session
PATH = "/console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


class SignInRequired(Exception):
    """No valid session: the page sends the browser to the sign-in form."""


class Refused(Exception):
    """A request the console refuses, with the status and one line that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Signed:
    """The operator of this request, as their session and their row say."""

    name: str
    role: OperatorRole
    csrf: str

    @property
    def can_change(self) -> bool:
        return self.role == OperatorRole.admin


def _serializer(rt: Runtime, purpose: str) -> URLSafeTimedSerializer:
    # A key of each tenant's own: a cookie signed by one tenant's console is refused by another's, whatever the
    # operator's name (the default tenant's key is the one it always had).
    tenant = f"/tenant-{rt.tenant_id}" if rt.tenant_id != DEFAULT_TENANT_ID else ""
    return URLSafeTimedSerializer(rt.vault.key_for(f"console/{purpose}{tenant}"), salt=purpose)


def _secure(request: Request) -> bool:
    # uvicorn's proxy headers middleware has set the scheme from X-Forwarded-Proto, for trusted proxies only
    return request.url.scheme == "https"


def start_session(request: Request, response: Response, rt: Runtime, operator: Operator) -> None:
    """Sign the operator in: a fresh CSRF token, their current session version, the cookie."""
    value = _serializer(rt, "session").dumps([operator.name, operator.session_version, secrets.token_urlsafe(24)])
    response.set_cookie(
        COOKIE, value, max_age=rt.settings.console.session_hours * 3600, path=PATH, httponly=True,
        samesite="strict", secure=_secure(request),
    )  # fmt: skip


def end_session(response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")


def _read(rt: Runtime, value: str | None) -> tuple[str, int, str] | None:
    if not value:
        return None
    try:
        name, version, csrf = _serializer(rt, "session").loads(value, max_age=rt.settings.console.session_hours * 3600)
    except (BadSignature, ValueError, TypeError):
        return None
    if not (isinstance(name, str) and isinstance(version, int) and isinstance(csrf, str)):
        return None
    return name, version, csrf


async def signed_in(request: Request, rt: RuntimeDep, session: SessionDep) -> Signed:
    """The operator whose session this is; a removed operator or an older session version is signed out."""
    found = _read(rt, request.cookies.get(COOKIE))
    if found is None:
        raise SignInRequired
    name, version, csrf = found
    operator = (await session.execute(select(Operator).where(col(Operator.name) == name))).scalars().first()
    if operator is None or operator.removed_at is not None or operator.session_version != version:
        raise SignInRequired
    return Signed(name=operator.name, role=OperatorRole(operator.role), csrf=csrf)


SignedDep = Annotated[Signed, Depends(signed_in)]


def tokens_match(given: Any, expected: str) -> bool:
    return isinstance(given, str) and bool(given) and hmac.compare_digest(given.encode(), expected.encode())


async def _given_csrf(request: Request) -> Any:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    form = await request.form()  # parsed once: FastAPI's Form parameters read the same cached form
    return form.get(CSRF_FIELD)


async def may_change(request: Request, user: SignedDep) -> Signed:
    """A change: the session's CSRF token must come with it, and the operator must not be a viewer."""
    if not tokens_match(await _given_csrf(request), user.csrf):
        raise Refused(403, "this form's security token is missing or out of date: reload the page and try again")
    if not user.can_change:
        raise Refused(403, f"{user.name} is a viewer: viewers see everything and change nothing")
    return user


ChangeDep = Annotated[Signed, Depends(may_change)]


def sign_in_token(request: Request, rt: Runtime) -> tuple[str, str | None]:
    """The sign-in form's CSRF token, and the cookie value to set when the browser has none yet (a signed nonce)."""
    serializer = _serializer(rt, "sign-in")
    try:
        nonce = serializer.loads(request.cookies.get(SIGN_IN_COOKIE) or "", max_age=3600)
        if isinstance(nonce, str):
            return nonce, None
    except (BadSignature, ValueError, TypeError):
        pass
    nonce = secrets.token_urlsafe(24)
    return nonce, serializer.dumps(nonce)


def set_sign_in_cookie(request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        SIGN_IN_COOKIE, value, max_age=3600, path=PATH, httponly=True, samesite="strict", secure=_secure(request)
    )
