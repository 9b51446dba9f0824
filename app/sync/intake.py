"""Turning what a sender posted, or what the service asks of itself, into inbox events: keys, hashes, and the
password sealed away."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.crypto import Vault
from app.db import inbox
from app.db.inbox import Delivery
from app.db.models import OPEN_STATUSES, Event
from app.db.types import utcnow
from app.events.registry import EventKind, Source
from app.sync.contacts import Contact


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
        source=Source.coursesales,
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
        source=Source.compat,
        kind=EventKind.contact_upserted,
        dedupe_key=digest,
        body_hash=digest,
        payload={"contact": contact.model_dump(exclude={"password"})},
        subject=contact.key,
        secret=vault.encrypt(contact.password) if contact.password else None,
    )


@dataclass(frozen=True)
class Request:
    """Work the service asks of itself: an internal event, added unless the same kind is open for the subject."""

    kind: EventKind
    subject: str
    payload: dict[str, Any]


def course_request(course_date_id: int) -> Request:
    """Make (or bring in step) the Moodle course of a course date."""
    return Request(EventKind.course_sync, f"course_date:{course_date_id}", {"course_date_id": course_date_id})


def completion_request(*, contact_key: str, course_date_id: int, user_id: int, course_id: int) -> Request:
    """Run the process step of a completion found in Moodle (the same once-only guard as the webhook's)."""
    return Request(
        EventKind.completion_pull,
        f"completion:{contact_key}:{course_date_id}",
        {"relateduserid": user_id, "courseid": course_id},
    )


async def add_request(session: AsyncSession, request: Request) -> Event | None:
    """Add the request's event (work of our own, e.g. "make this course") in the caller's transaction; None when the
    same kind is already open for the subject."""
    kind, subject = request.kind, request.subject
    open_one = (
        await session.execute(
            select(col(Event.id)).where(
                col(Event.subject) == subject, col(Event.kind) == kind, col(Event.status).in_(OPEN_STATUSES)
            )
        )
    ).first()
    if open_one is not None:
        return None
    # A key of its own (never a repeat): a plain insert, in the caller's transaction.
    event = Event(
        **inbox.event_row(
            Delivery(
                source=Source.internal,
                kind=kind,
                dedupe_key=f"{kind}:{subject}:{uuid.uuid4().hex}",
                body_hash="-",
                payload=request.payload,
                subject=subject,
            ),
            utcnow(),
        )
    )
    session.add(event)
    await session.flush()
    return event
