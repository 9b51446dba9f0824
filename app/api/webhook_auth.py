"""Inbound authentication per source: a Standard Webhooks signature or a static bearer token."""

from __future__ import annotations

from fastapi import HTTPException, Request, status
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.api.deps import tokens_equal

SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def verify(
    request: Request, body: bytes, *, secret: str | None, token: str | None, body_token: str | None = None
) -> str:
    """Return the method that authenticated the request, or raise 400/401.

    A method whose credential is unset is off: it never accepts anything.
    """
    headers = request.headers
    if any(h in headers for h in SIGNATURE_HEADERS):
        if not secret:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "signed deliveries are not enabled for this source")
        missing = [h for h in SIGNATURE_HEADERS if h not in headers]
        if missing:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"missing header(s): {', '.join(missing)}")
        try:
            Webhook(secret).verify(body, {h: headers[h] for h in SIGNATURE_HEADERS}, json_parse=False)
        except (WebhookVerificationError, ValueError) as exc:  # ValueError: malformed header or body bytes
            # The library's message says which check failed (timestamp or signature), never the expected value.
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"webhook signature rejected: {exc}") from None
        return "signature"
    auth = headers.get("authorization", "")
    if auth:
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not tokens_equal(given.strip(), token):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
            )
        return "token"
    if body_token is not None:
        if not tokens_equal(body_token, token):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid token")
        return "body-token"
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "authentication required: Standard Webhooks headers or Authorization: Bearer <token>",
        headers={"WWW-Authenticate": "Bearer"},
    )
