"""Named operators: the accounts that sign in to the console (their rules are in app.sync.operators)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, UniqueConstraint
from sqlmodel import Field

from app.db.statuses import OperatorRole
from app.db.tenancy import TenantScoped
from app.db.types import UTCDateTime, utcnow

NAME_MAX = 64


class Operator(TenantScoped, table=True):
    """One operator: a lower-case name, an argon2id hash, a role, and the version its sessions were signed with."""

    __tablename__ = "operators"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_operators_tenant_name"),)

    id: int = Field(default=None, primary_key=True)  # None only until the insert
    name: str = Field(max_length=NAME_MAX)  # stored lower-case: unique in its tenant whatever the case typed
    password_hash: str = Field(max_length=255)
    role: str = Field(default=OperatorRole.admin, max_length=16)  # an OperatorRole
    # Bumped on every password change, removal and re-add: a session cookie signed with an older version is over.
    session_version: int = 1
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    # A removed operator's row stays (its hash cleared), so that its version only grows if the name comes back.
    removed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
