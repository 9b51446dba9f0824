"""Inbound authentication per source: a Standard Webhooks signature or a static bearer token."""

from __future__ import annotations

import hmac
import time
from datetime import UTC, datetime

from fastapi import HTTPException, Request, status
from standardwebhooks.webhooks import Webhook

from app.api.deps import tokens_equal

SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def verify(
    request: Request,
    body: bytes,
    *,
    secret: str | None,
    token: str | None,
    body_token: str | None = None,
    tolerance: int = 300,
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
        problem = _signature_problem(secret, body, headers["webhook-id"], headers["webhook-timestamp"],
                                     headers["webhook-signature"], tolerance)  # fmt: skip
        if problem:
            # Says which check failed (timestamp or signature), never the expected value.
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"webhook signature rejected: {problem}")
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


def _signature_problem(secret: str, body: bytes, msg_id: str, timestamp: str, signatures: str, tolerance: int) -> str:
    """The Standard Webhooks check with our window (the library's is a fixed 5 minutes): "" when it passes."""
    try:
        sent = int(timestamp)
    except ValueError:
        return "webhook-timestamp is not a Unix time in seconds"
    now = time.time()
    if sent < now - tolerance:
        return f"message timestamp too old (more than {tolerance} s)"
    if sent > now + tolerance:
        return f"message timestamp too new (more than {tolerance} s ahead)"
    expected = Webhook(secret).sign(msg_id, datetime.fromtimestamp(sent, tz=UTC), body).encode()
    given = signatures.encode("utf-8", "surrogatepass").split(b" ")
    if not any(hmac.compare_digest(expected, sig) for sig in given):
        return "no matching signature found"
    return ""
