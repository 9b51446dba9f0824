"""The keyring: the data keys wrapped under SYNC_SECRET_KEY, so that the key can be rotated (made on first start).

Revision ID: 20261206_0016
Revises: 20261206_0015
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261206_0016"
down_revision: str | None = "20261206_0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "keyring",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("wrapped", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("keyring")
