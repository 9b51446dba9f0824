"""A linked Moodle user that is gone, and contacts an operator has taken out of the sync.

Moodle still answers a deleted user when asked by id (recording 150): its username replaced by
``<email>.<timestamp>``, its email by an md5 hash, no ``deleted`` field. So "the id came back" does not mean "the
user exists": a linked user whose username is no longer the link's, and has that shape, was deleted. (A username
changed by hand keeps an ordinary shape: that account is still the contact's, and is renamed back, never made
twice.) A person may have deleted the account on purpose (an erasure request): a contact marked "do not sync" is
never made again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.arrays import one_of
from app.db.models import DoNotSync, UserLink

_DELETED_NAME = re.compile(r".+\.\d{9,11}")
_MD5 = re.compile(r"[0-9a-f]{32}")


def deleted_in_moodle(account: dict[str, Any] | None, link: UserLink) -> bool:
    """Whether the account Moodle answered for ``link``'s id is a deleted user's remains (or nothing at all)."""
    if account is None:
        return True
    username, email = str(account.get("username", "")), str(account.get("email", ""))
    if username == link.username:
        return False
    # The email is hidden from tokens without moodle/site:viewuseridentity: the username's shape decides then.
    return bool(_DELETED_NAME.fullmatch(username)) and (not email or bool(_MD5.fullmatch(email)))


def contact_key_for(text: str) -> str:
    """An operator's way of naming a contact (its id, its username, or a key) as the key events use."""
    text = text.strip()
    if text.startswith(("contact:", "username:")):
        return text
    return f"contact:{int(text)}" if text.isascii() and text.isdigit() else f"username:{text.lower()}"


async def held(session: AsyncSession, keys: Iterable[str]) -> set[str]:
    """The keys among ``keys`` marked "do not sync"."""
    wanted = sorted(set(keys))
    if not wanted:
        return set()
    rows = await session.execute(
        select(col(DoNotSync.contact_key)).where(one_of(session, col(DoNotSync.contact_key), wanted))
    )
    return set(rows.scalars())
