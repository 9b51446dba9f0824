"""The tenant registry: one row per provider served by this deployment (its rules are in app.sync.tenants).

The tenant ``default`` is the file/environment configuration itself and has no row. Every other tenant's settings
are data: ``config`` holds the sections and keys it sets, as sync.toml spells them, and ``secrets`` its credentials,
each encrypted with the Vault (SYNC_SECRET_KEY). ``tenant_credentials`` finds a tenant from a credential it was
given (a webhook's token, a wstoken, a bearer token) by keyed hash, never by a scan, and its primary key is the guard
that one value never serves two tenants.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Integer
from sqlmodel import Field, SQLModel

from app.db.types import UTCDateTime, utcnow

SLUG_MAX = 40
NAME_MAX = 200
DEFAULT_SLUG = "default"  # the file/environment configuration: never a row, a slug no tenant may take
# What later parts may store for the default tenant's rows (registered tenants' ids start at 1).
DEFAULT_TENANT_ID = 0


class Tenant(SQLModel, table=True):
    """One registered tenant: a CourseSales account, a Moodle site, their settings and credentials."""

    __tablename__ = "tenants"

    id: int = Field(default=None, primary_key=True)  # None only until the insert
    slug: str = Field(max_length=SLUG_MAX, unique=True)  # a-z 0-9 -, in its URLs: /t/{slug}/...
    name: str = Field(max_length=NAME_MAX)
    enabled: bool = True
    # {"moodle": {"url": ...}, ...}: only what the tenant sets; the rest is each setting's default.
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # {"MOODLE__TOKEN": <Fernet token>, ...}: names as the environment spells them without SYNC_, values encrypted.
    secrets: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class TenantCredential(SQLModel, table=True):
    """A credential a tenant was given, by its keyed hash (app.sync.tenants.credential_digest): which tenant and
    which setting it is. Rewritten whenever the tenant's secrets change, and on a key rotation."""

    __tablename__ = "tenant_credentials"

    digest: str = Field(primary_key=True, max_length=64)  # HMAC-SHA256, hex
    tenant_id: int = Field(
        sa_column=Column(Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    name: str = Field(max_length=64)  # "API__TOKEN", "COMPAT__WSTOKEN", ...
