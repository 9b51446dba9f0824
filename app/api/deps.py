"""Shared dependencies: the process runtime, sessions, the ops bearer tokens (full and read-only), the NUL check."""

from __future__ import annotations

import hmac
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.types import MAX_ID
from app.runtime import Runtime
from app.settings import Settings, secret

OPS_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong ops bearer token (SYNC_API__TOKEN, or SYNC_API__READ_TOKEN for a GET)"},
    403: {"description": "the read-only token (SYNC_API__READ_TOKEN) on a request that changes state"},
    400: {"description": "malformed request (e.g. NUL characters)"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such item"}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "the action does not apply in the item's current state"}
}
# Ids and offsets are bounded so that what the database cannot hold is a 422, not a 500.
MAX_OFFSET = 1_000_000_000
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="OpsToken",
    description="`Authorization: Bearer <SYNC_API__TOKEN>`; or the read-only `SYNC_API__READ_TOKEN`, for GET only. "
    "A registered tenant's own `API__TOKEN` (or `API__READ_TOKEN`) acts on that tenant alone; the hub token "
    "(`SYNC_HUB__TOKEN`) with `?tenant=SLUG` on the tenant named.",
)
# What the read-only token may call: every read of /api/, nothing that changes state.
READ_METHODS = frozenset({"GET", "HEAD"})


RUNTIME = "sync.runtime"  # the scope key under which the request guard leaves the runtime of the request's tenant
ACCESS = "sync.access"  # and how far its /api bearer token reaches ("full" or "read")
ACTOR = "sync.actor"  # and who the audit trail names, when not the tenant's own ops token ("api")


def runtime_of(request: Request) -> Runtime:
    """The runtime of the tenant the request is for (app.api.tenant_routing), else the process's own."""
    runtime: Runtime = request.scope.get(RUNTIME) or request.app.state.runtime
    return runtime


async def get_runtime(request: Request) -> Runtime:
    # async: a plain def dependency would cost a thread-pool hop on every request
    return runtime_of(request)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(rt: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """One session per request, for reading; changes go through the unit of work (app.api.unit_of_work)."""
    async with rt.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def tokens_equal(given: Any, expected: str | None) -> bool:
    """Constant-time comparison; an unset expected token matches nothing, nor does anything but a string."""
    if not isinstance(given, str) or not given or not expected:
        return False
    # surrogatepass: a lone surrogate ("\ud800" in a JSON body) is a wrong token, not an encoding error.
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def token_access(given: Any, settings: Settings) -> Literal["full", "read"] | None:
    """Which ops token this is: the full one, the read-only one, or neither (unset tokens match nothing)."""
    # Both compared every time: how long a refusal takes says nothing about which token came close.
    full = tokens_equal(given, secret(settings.api.token))
    read = tokens_equal(given, secret(settings.api.read_token))
    return "full" if full else "read" if read else None


async def require_ops(
    request: Request, rt: RuntimeDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """The one check of every /api/ route: either token may read, only SYNC_API__TOKEN may change state."""
    access = request.scope.get(ACCESS) or token_access(creds.credentials if creds else None, rt.settings)
    if access is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "a valid ops bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    if access == "read" and request.method not in READ_METHODS:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"the read-only token (SYNC_API__READ_TOKEN) cannot {request.method}: changes need SYNC_API__TOKEN",
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
