"""Named operators: add, list, remove, change a password, verify a name and password (argon2id).

The caller owns the transaction (these only flush) and names the actor for the audit trail. A password is never
logged, echoed or written anywhere but as its hash.
"""

from __future__ import annotations

import asyncio
import re
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.accounts import NAME_MAX, Operator
from app.db.statuses import OperatorRole
from app.db.types import utcnow
from app.sync.operations import audit

__all__ = [
    "MIN_PASSWORD_CHARS",
    "OperatorError",
    "OperatorRole",
    "add",
    "change_password",
    "list_operators",
    "normal_name",
    "remove",
    "verify",
]

NAME = re.compile(rf"[a-z0-9._@-]{{1,{NAME_MAX}}}")
MIN_PASSWORD_CHARS = 12
# Hashing costs memory, not length, but a bound keeps a pasted file out of a form.
MAX_PASSWORD_CHARS = 1024

hasher = PasswordHasher()  # argon2id with the library's defaults (RFC 9106's second recommendation)


class OperatorError(Exception):
    """A refused operator change, with one line that says why (never a password)."""


def normal_name(name: str) -> str:
    """The name as stored: lower-case, 1 to 64 of a-z 0-9 . _ @ -; anything else is refused."""
    lowered = name.strip().lower()
    if not NAME.fullmatch(lowered):
        shown = name if len(name) <= NAME_MAX else name[:NAME_MAX] + "..."
        raise OperatorError(f"an operator's name is 1 to {NAME_MAX} characters of a-z 0-9 . _ @ -, not {shown!r}")
    return lowered


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise OperatorError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise OperatorError(f"a password has at most {MAX_PASSWORD_CHARS} characters")


def _secret(password: str) -> bytes:
    # surrogatepass: a lone surrogate from a form is a wrong password, not an encoding error
    return password.encode("utf-8", "surrogatepass")


async def _hash(password: str) -> str:
    # argon2 spends ~50 ms of CPU on purpose: off the event loop, which serves other requests meanwhile
    return await asyncio.to_thread(hasher.hash, _secret(password))


def _matches(hashed: str, password: str) -> bool:
    try:
        return hasher.verify(hashed, _secret(password))
    except (VerificationError, InvalidHashError):
        return False


@cache
def _dummy_hash() -> str:
    return hasher.hash(b"no operator has this password")


async def _find(session: AsyncSession, name: str) -> Operator | None:
    """The operator's row by its stored name, a removed one included."""
    return (await session.execute(select(Operator).where(col(Operator.name) == name))).scalars().first()


async def _current(session: AsyncSession, name: str) -> Operator:
    found = await _find(session, normal_name(name))
    if found is None or found.removed_at is not None:
        raise OperatorError(f"no operator {normal_name(name)}")
    return found


async def add(
    session: AsyncSession, name: str, password: str, *, role: OperatorRole = OperatorRole.admin, actor: str
) -> Operator:
    """A new operator; a removed name comes back with a higher session version (its old sessions stay over)."""
    name = normal_name(name)
    check_password(password)
    found = await _find(session, name)
    if found is not None and found.removed_at is None:
        raise OperatorError(f"operator {name} exists already")
    now = utcnow()
    hashed = await _hash(password)
    if found is None:
        found = Operator(name=name, password_hash=hashed, role=role, created_at=now, updated_at=now)
        session.add(found)
    else:
        found.password_hash, found.role, found.removed_at = hashed, role, None
        found.created_at = found.updated_at = now
        found.session_version += 1
    audit(session, actor=actor, action="operator.add", target=f"operator:{name}", note=f"role {role.value}")
    try:
        await session.flush()
    except IntegrityError:  # added by someone else since the look-up
        raise OperatorError(f"operator {name} exists already") from None
    return found


async def list_operators(session: AsyncSession) -> list[Operator]:
    """The current operators, by name."""
    query = select(Operator).where(col(Operator.removed_at).is_(None)).order_by(col(Operator.name))
    return list((await session.execute(query)).scalars())


async def remove(session: AsyncSession, name: str, *, actor: str) -> None:
    """Take an operator away; the version bump ends their sessions."""
    found = await _current(session, name)
    found.password_hash, found.removed_at = "", utcnow()
    found.updated_at = found.removed_at
    found.session_version += 1
    audit(session, actor=actor, action="operator.remove", target=f"operator:{found.name}")
    await session.flush()


async def change_password(session: AsyncSession, name: str, password: str, *, actor: str) -> Operator:
    """A new password; the version bump ends the sessions signed in with the old one."""
    found = await _current(session, name)
    check_password(password)
    found.password_hash = await _hash(password)
    found.updated_at = utcnow()
    found.session_version += 1
    audit(session, actor=actor, action="operator.passwd", target=f"operator:{found.name}")
    await session.flush()
    return found


async def verify(session: AsyncSession, name: str, password: str) -> Operator | None:
    """The operator with this name and password, else None. An unknown name costs the same hash as a wrong password
    (the time of a refusal tells no one which names exist); a hash of older parameters is renewed on success."""
    dummy = await asyncio.to_thread(_dummy_hash)  # made once, before any answer: the first refusal is no slower
    try:
        found = await _find(session, normal_name(name))
    except OperatorError:
        found = None
    if found is None or found.removed_at is not None or not found.password_hash:
        await asyncio.to_thread(_matches, dummy, password)
        return None
    if not await asyncio.to_thread(_matches, found.password_hash, password):
        return None
    if hasher.check_needs_rehash(found.password_hash):
        found.password_hash = await _hash(password)  # the same password: its sessions stay
        found.updated_at = utcnow()
        await session.flush()
    return found
