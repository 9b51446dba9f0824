"""The tenant registry: ``tenants`` (slug, name, enabled, config and encrypted secrets as JSON) and
``tenant_credentials`` (a credential's keyed hash -> its tenant and setting name).

Nothing is inserted: the tenant ``default`` is the file/environment configuration and has no row, so an install
with no tenant registered works exactly as before.

Revision ID: 20261206_0015
Revises: 20261206_0014
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261206_0015"
down_revision: str | None = "20261206_0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("slug", sa.String(40), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("secrets", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "tenant_credentials",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
    )
    op.create_index("ix_tenant_credentials_tenant_id", "tenant_credentials", ["tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_tenant_credentials_tenant_id", table_name="tenant_credentials")
    op.drop_table("tenant_credentials")
    op.drop_table("tenants")
