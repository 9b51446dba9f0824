"""An ASGI guard in front of every route: ops auth before any parsing, body size, NUL characters, and who may see
the docs and metrics (the headers of the pages a browser shows are app.api.security_headers').

FastAPI parses a JSON body before it runs dependencies, so without this an unauthenticated caller could
tell a malformed body (422) from a well-formed one; PostgreSQL refuses NUL characters in text, so they are
refused here with a 400 rather than reaching the database as a 500.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from app.api import tenant_routing as routing
from app.api.deps import BODY, NUL, NUL_QUERY, token_access
from app.api.tenants import HUB_PATH, is_hub_token
from app.runtime import Runtime
from app.settings import Settings

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

DOCS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


class RequestGuard:
    def __init__(
        self, app: Any, settings: Callable[[], Settings], runtime: Callable[[], Runtime | None] = lambda: None
    ) -> None:
        self.app = app
        self.settings = settings
        self.runtime = runtime  # the home runtime, once the app has started: which tenant a request is for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = self.settings()
        headers = dict(scope.get("headers") or [])
        home = self.runtime()
        refusal = await _route(home, scope, headers, settings)
        if refusal is not None:
            await _reply(send, refusal.status, refusal.detail, refusal.headers)
            return
        if routing.CONSOLE_ROOT in scope:  # a tenant's console (its prefix, its redirects and cookies)
            send = routing.console_send(send, scope[routing.CONSOLE_ROOT])
        path = routing.route_path(scope)
        if path in DOCS:
            if settings.api.docs == "off":
                await _reply(send, 404, "Not Found")
                return
        elif path == "/metrics" and settings.metrics.access == "token" and not _ops_token_ok(headers, settings):
            await _reply(send, 401, "a valid ops bearer token is required", {"www-authenticate": "Bearer"})
            return
        limit = settings.api.max_body_bytes
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _reply(send, 413, f"body larger than {limit} bytes")
            return
        # Only the ops API (its caller is authenticated by now) and the console's forms are checked for NUL here; webhooks check after their
        # own authentication, and the Moodle-compatible endpoint answers as Moodle would (HTTP 200, an error body).
        check_nul = path.startswith(("/api/", "/console/"))
        if check_nul and NUL_QUERY.search(scope.get("query_string") or b""):
            await _reply(send, 400, "NUL characters are not accepted")
            return
        # The one place a body's size is checked: every route reads the body this guard collected.
        chunks: list[bytes] = []
        size, more_messages = 0, True
        while more_messages:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay_then(message, receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _reply(send, 413, f"body larger than {limit} bytes")
                return
            chunks.append(chunk)
            more_messages = message.get("more_body", False)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if check_nul and NUL.search(body):
            await _reply(send, 400, "NUL characters are not accepted")
            return
        scope[BODY] = body  # read_body() takes it from here, without a second pass through receive()
        if home is not None and path == routing.COMPAT_PATH and routing.RUNTIME not in scope:
            refusal = await routing.for_compat(home, scope, body)
            if refusal is not None:
                await _reply(send, refusal.status, refusal.detail, refusal.headers)
                return
        await self.app(scope, _replay(body, receive), send)


async def _route(
    home: Runtime | None, scope: Scope, headers: dict[bytes, bytes], settings: Settings
) -> routing.Refusal | None:
    """Which tenant the request is for (app.api.tenant_routing), and /api's authentication, before any body is read."""
    if home is not None and scope["path"].startswith("/t/"):
        routed = routing.tenant_path(scope["path"])
        if routed is not None:
            refusal = await routing.for_tenant_path(home, scope, *routed)
            if refusal is not None:
                return refusal
        console = routing.CONSOLE_PATH.match(scope["path"])
        if console is not None:
            return await routing.for_tenant_console(home, scope, console["slug"])
    path = scope["path"]
    if not path.startswith("/api/"):
        return None
    if home is not None:
        return await routing.for_api(home, scope, _bearer(headers), _is_registry(path))
    if _api_token_ok(path, headers, settings):  # before start-up: the file's tokens
        return None
    return routing.Refusal(401, f"a valid {_wanted(path)} bearer token is required", {"www-authenticate": "Bearer"})


def _bearer(headers: dict[bytes, bytes]) -> str | None:
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _ops_token_ok(headers: dict[bytes, bytes], settings: Settings) -> bool:
    # Either token passes here; require_ops (app.api.deps) refuses the read-only one on a change, with a 403.
    return token_access(_bearer(headers), settings) is not None


def _is_registry(path: str) -> bool:
    return path == HUB_PATH or path.startswith(HUB_PATH + "/")


def _wanted(path: str) -> str:
    return "hub (SYNC_HUB__TOKEN)" if _is_registry(path) else "ops"


def _api_token_ok(path: str, headers: dict[bytes, bytes], settings: Settings) -> bool:
    """The tenant registry opens to the hub token alone (require_hub checks it there again), the rest of /api/ to
    the ops tokens: either way before any body is parsed, so a wrong token never learns whether its body was good."""
    if _is_registry(path):
        return is_hub_token(_bearer(headers), settings)
    return _ops_token_ok(headers, settings)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def again() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def _replay_then(first: dict[str, Any], receive: Receive) -> Receive:
    sent = False

    async def again() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return first
        return await receive()

    return again


async def _reply(send: Send, status: int, detail: str, extra: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
