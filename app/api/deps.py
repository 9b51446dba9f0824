"""Shared dependencies: the process runtime, sessions, the ops bearer token, the NUL check."""

from __future__ import annotations

import hmac
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.types import MAX_ID
from app.runtime import Runtime
from app.settings import secret

OPS_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong ops bearer token (SYNC_API__TOKEN)"},
    400: {"description": "malformed request (e.g. NUL characters)"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such item"}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "the action does not apply in the item's current state"}
}
# Ids and offsets are bounded so that what the database cannot hold is a 422, not a 500.
MAX_OFFSET = 1_000_000_000
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]

bearer = HTTPBearer(auto_error=False, scheme_name="OpsToken", description="`Authorization: Bearer <SYNC_API__TOKEN>`")


async def get_runtime(request: Request) -> Runtime:
    # async: a plain def dependency would cost a thread-pool hop on every request
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(rt: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """One session per request; the endpoint commits (then enqueues), anything else rolls back."""
    async with rt.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def tokens_equal(given: Any, expected: str | None) -> bool:
    """Constant-time comparison; an unset expected token matches nothing, nor does anything but a string."""
    if not isinstance(given, str) or not given or not expected:
        return False
    # surrogatepass: a lone surrogate ("\ud800" in a JSON body) is a wrong token, not an encoding error.
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


async def require_ops(rt: RuntimeDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    if creds is None or not tokens_equal(creds.credentials, secret(rt.settings.api.token)):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "a valid ops bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )


NUL = re.compile(rb"\x00|\\u0000", re.IGNORECASE)  # in a body: raw, or escaped in JSON
NUL_QUERY = re.compile(rb"\x00|%00")


def refuse_nul(body: bytes) -> None:
    """PostgreSQL cannot store NUL characters in text: refuse them with a 400 (called after authentication)."""
    if NUL.search(body):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "NUL characters are not accepted")


BODY = "sync.body"  # the scope key under which the request guard leaves the body it collected and checked


async def read_body(request: Request) -> bytes:
    """The request's body, as the guard collected it (its size checked there, the one place it is)."""
    body = request.scope.get(BODY)
    return body if body is not None else await request.body()
