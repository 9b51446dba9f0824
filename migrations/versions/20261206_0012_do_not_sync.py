"""Contacts an operator has taken out of the sync ("do not sync": an account deleted on purpose stays deleted), and
the state of each upstream shared by every process (an unusable Moodle or CourseSales holds the work bound for it).

Revision ID: 20261206_0012
Revises: 20261206_0011
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261206_0012"
down_revision: str | None = "20261206_0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "do_not_sync",
        sa.Column("contact_key", sa.String(255), primary_key=True),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("note", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "upstream_states",
        sa.Column("name", sa.String(16), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("alerted_long", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_table("upstream_states")
    op.drop_table("do_not_sync")
