"""What we hold of a contact: the user links its keys name, and the newest contact data an event brought."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import desc, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Event, UserLink
from app.events.registry import CONTACT_KINDS


async def latest_contact(s: Any, contact_key: str) -> dict[str, Any] | None:
    """The newest contact data an event brought for this contact (passwords are never kept)."""
    rows = await s.execute(
        select(Event.payload)
        .where(Event.subject == contact_key, Event.kind.in_(CONTACT_KINDS))
        .order_by(desc(Event.id))
        .limit(1)
    )
    payload = rows.scalar_one_or_none()
    if not payload:
        return None
    return payload.get("contact") or payload.get("registration", {}).get("contact")


async def user_links(s: AsyncSession, contact_keys: Iterable[str]) -> dict[str, UserLink]:
    """The user links these contact keys name, by key: "contact:<id>" or "username:<username>"."""
    contact_ids: set[int] = set()
    usernames: set[str] = set()
    for key in contact_keys:
        kind, _, value = key.partition(":")
        if kind == "username":
            usernames.add(value)
        elif kind == "contact" and (number := _contact_id(value)) is not None:
            contact_ids.add(number)
    found = await s.execute(
        select(UserLink).where(or_(UserLink.contact_id.in_(contact_ids), UserLink.username.in_(usernames)))
    )
    out: dict[str, UserLink] = {}
    for link in found.scalars():
        out[link.contact_key] = link
        out[f"username:{link.username}"] = link
    return out


def _contact_id(text: str) -> int | None:
    """The number a contact key carries, if user_links.contact_id (a 32-bit integer) can hold it."""
    try:
        number = int(text)
    except ValueError:
        return None
    return number if -(2**31) <= number < 2**31 else None
