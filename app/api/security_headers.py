"""The headers of every page a browser shows (/docs, /static/, /console): a Content-Security-Policy that allows no
inline script and no other origin, no framing, no MIME sniffing, no referrer.

A pure ASGI middleware. On any other path, the webhooks' hot path among them, its only work is one prefix test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# /docs covers /docs/oauth2-redirect; /redoc answers 404 (ReDoc needs a CDN and is not served) but keeps the headers.
PREFIXES = ("/docs", "/redoc", "/static/", "/console")
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
_OURS = frozenset(name for name, _ in HEADERS)


class SecurityHeaders:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if not (path.startswith(PREFIXES) or (path.startswith("/t/") and "/console" in path)):  # a tenant's console
            await self.app(scope, receive, send)
            return

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                # Replaced, not added to: one policy per header, whatever an inner layer set (RequestGuard's
                # frame-ancestors for the docs, say).
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _OURS]
                message = {**message, "headers": [*kept, *HEADERS]}
            await send(message)

        await self.app(scope, receive, sending)
