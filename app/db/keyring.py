"""The keyring: the data keys, wrapped under SYNC_SECRET_KEY (app.crypto, app.sync.keyring)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from app.db.types import UTCDateTime, utcnow

DATA = "data"  # the one row today; a name, so that a later key of another purpose needs no new table


class KeyringEntry(SQLModel, table=True):
    __tablename__ = "keyring"

    name: str = Field(primary_key=True, max_length=32)
    wrapped: str  # Fernet token of the data keys under a key derived from SYNC_SECRET_KEY
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    # When SYNC_SECRET_KEY last wrapped it (created, or rotate-key)
    rotated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
