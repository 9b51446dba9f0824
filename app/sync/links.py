"""Our links as the rules look them up: a contact's user links by its keys, course links by course date; and the
newest contact data an event brought."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import desc, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.models import CourseLink, Event, UserLink
from app.events.registry import CONTACT_KINDS


async def latest_contact(s: AsyncSession, contact_key: str) -> dict[str, Any] | None:
    """The newest contact data an event brought for this contact (passwords are never kept)."""
    rows = await s.execute(
        select(col(Event.payload))
        .where(col(Event.subject) == contact_key, col(Event.kind).in_(CONTACT_KINDS))
        .order_by(desc(col(Event.id)))
        .limit(1)
    )
    payload = rows.scalar_one_or_none()
    if not payload:
        return None
    contact: dict[str, Any] | None = payload.get("contact") or payload.get("registration", {}).get("contact")
    return contact


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
        select(UserLink).where(or_(col(UserLink.contact_id).in_(contact_ids), col(UserLink.username).in_(usernames)))
    )
    out: dict[str, UserLink] = {}
    for link in found.scalars():
        out[link.contact_key] = link
        out[f"username:{link.username}"] = link
    return out


async def course_links(s: AsyncSession, course_dates: Iterable[int]) -> dict[int, CourseLink]:
    """The course links of these course dates, by course date id."""
    rows = await s.execute(select(CourseLink).where(col(CourseLink.course_date_id).in_(list(course_dates))))
    return {link.course_date_id: link for link in rows.scalars()}


def _contact_id(text: str) -> int | None:
    """The number a contact key carries, if user_links.contact_id (a 32-bit integer) can hold it."""
    try:
        number = int(text)
    except ValueError:
        return None
    return number if -(2**31) <= number < 2**31 else None
