"""Opening the keyring with SYNC_SECRET_KEY (or, during a rotation, SYNC_SECRET_KEY_PREVIOUS), and rotating it.

The first process to open an install's database makes the keyring: the keys the install has used so far (derived
from SYNC_SECRET_KEY), wrapped under it. From then on the keys never depend on SYNC_SECRET_KEY again: a new
SYNC_SECRET_KEY with the old one in SYNC_SECRET_KEY_PREVIOUS opens it, and `moodle-sync rotate-key` wraps it under the
new key alone and moves every encrypted value to a fresh encryption key, after which the previous key can go. The
digests keep their key: a delivery repeated across a rotation is still a repeat.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.crypto import DataKeys, Vault
from app.db.keyring import DATA, KeyringEntry
from app.db.models import Event
from app.db.tenants import Tenant
from app.db.types import utcnow


class KeyringError(Exception):
    """The keyring cannot be opened with the keys given (one line naming the variables, never a key)."""


@dataclass(frozen=True)
class Opened:
    keys: DataKeys
    with_previous: bool  # opened with SYNC_SECRET_KEY_PREVIOUS: a rotation is under way


async def open_keys(session: AsyncSession, secret_key: str, previous: str | None = None) -> Opened:
    """The data keys; the keyring is made (and committed) on the first open of an install."""
    row = await session.get(KeyringEntry, DATA)
    if row is None:
        keys = DataKeys.derived(secret_key)
        session.add(KeyringEntry(name=DATA, wrapped=keys.wrap(secret_key)))
        try:
            await session.commit()
        except IntegrityError:  # another process made it first: read theirs
            await session.rollback()
            return await open_keys(session, secret_key, previous)
        return Opened(keys, with_previous=False)
    return _unwrap(row, secret_key, previous)


def _unwrap(row: KeyringEntry, secret_key: str, previous: str | None) -> Opened:
    for key, is_previous in ((secret_key, False), (previous, True)):
        if key:
            try:
                return Opened(DataKeys.unwrap(row.wrapped, key), with_previous=is_previous)
            except ValueError:
                continue
    raise KeyringError(
        "SYNC_SECRET_KEY does not open this database's keyring: it was made with another key; during a rotation "
        "set SYNC_SECRET_KEY_PREVIOUS to the key in use before"
    )


@dataclass(frozen=True)
class Rotated:
    re_encrypted: int  # values moved to the fresh encryption key


async def rotate(session: AsyncSession, secret_key: str, previous: str | None) -> Rotated:
    """Wrap the keyring under SYNC_SECRET_KEY alone and move every encrypted value to a fresh encryption key, in one
    transaction (the caller commits): a crash leaves the old state whole, and running it again is harmless."""
    await open_keys(session, secret_key, previous)  # made now if this install had none
    # Locked, then read, until the commit: a second rotate-key waits, then unwraps what the first one wrote.
    locked = select(KeyringEntry).where(col(KeyringEntry.name) == DATA).with_for_update()
    entry = (await session.execute(locked.execution_options(populate_existing=True))).scalars().one()
    opened = _unwrap(entry, secret_key, previous)
    old, new_keys = Vault("-", keys=opened.keys), opened.keys.with_fresh_fernet()
    new = Vault("-", keys=new_keys)
    moved = 0
    held = select(col(Event.id), col(Event.secret)).where(col(Event.secret).is_not(None))
    for found in (await session.execute(held)).all():
        await session.execute(
            update(Event).where(col(Event.id) == found.id).values(secret=new.encrypt(old.decrypt(found.secret)))
        )
        moved += 1  # a password waiting for its event: a few at a time, whatever the inbox holds
    moved += await re_encrypt_more(session, old, new)
    entry.wrapped, entry.rotated_at = new_keys.wrap(secret_key), utcnow()
    await session.flush()
    return Rotated(re_encrypted=moved)


async def re_encrypt_more(session: AsyncSession, old: Vault, new: Vault) -> int:
    """The tenants' credentials, each encrypted apart; their look-up digests keep their key, so they stay as they are."""
    moved = 0
    for tenant in (await session.execute(select(Tenant).with_for_update())).scalars():
        tenant.secrets = {name: new.encrypt(old.decrypt(token)) for name, token in tenant.secrets.items()}
        moved += len(tenant.secrets)
    return moved
