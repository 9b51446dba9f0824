"""Turning what a sender posted into inbox deliveries: keys, hashes, and the password sealed away."""

from __future__ import annotations

from typing import Any

from app.crypto import Vault
from app.db.inbox import Delivery
from app.sync.contacts import Contact

SOURCE_COURSESALES = "coursesales"
SOURCE_COMPAT = "compat"


def coursesales_delivery(
    vault: Vault,
    *,
    body: dict[str, Any],
    kind: str,
    delivery_id: str,
    contact: Contact | None,
    subject: str | None = None,
) -> Delivery:
    """A delivery of our own event schema: deduped on the sender's id, compared on a keyed hash of the body."""
    payload = dict(body)  # the contact is replaced below by a copy without the password; body stays as posted
    secret = None
    if contact is not None:
        holder = payload
        if "registration" in payload:
            holder = payload["registration"] = dict(payload["registration"])
        holder["contact"] = contact.model_dump(exclude={"password"})
        secret = vault.encrypt(contact.password) if contact.password else None
    return Delivery(
        source=SOURCE_COURSESALES,
        kind=kind,
        dedupe_key=delivery_id,
        body_hash=vault.digest(body),
        payload=payload,
        subject=subject or (contact.key if contact else None),
        secret=secret,
    )


def compat_delivery(vault: Vault, *, fields: dict[str, Any], contact: Contact) -> Delivery:
    """An export-map user: no delivery id, so a keyed hash of every field (password included) is the key.

    A real change such as a new password gives a new key and so a new event; a resend gives the same.
    """
    digest = vault.digest(["compat.user", fields])
    return Delivery(
        source=SOURCE_COMPAT,
        kind="contact.upserted",
        dedupe_key=digest,
        body_hash=digest,
        payload={"contact": contact.model_dump(exclude={"password"})},
        subject=contact.key,
        secret=vault.encrypt(contact.password) if contact.password else None,
    )
