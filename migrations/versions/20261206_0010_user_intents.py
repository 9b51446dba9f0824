"""Adoption is opt-in: intents mark the users the sync is about to create, links remember adopted accounts.

An unlinked Moodle account whose username matches a contact was taken over (its password, names and email
overwritten). Now only an account the sync made itself, as an intent committed before the create call says, is
linked without asking; any other is adopted only with users.adopt_existing, and keeps its password.

Revision ID: 20261206_0010
Revises: 20261206_0009
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261206_0010"
down_revision: str | None = "20261206_0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "user_intents",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("username", sa.String(100), nullable=False, unique=True),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("user_links") as batch:
        batch.add_column(sa.Column("adopted", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("user_links") as batch:
        batch.drop_column("adopted")
    op.drop_table("user_intents")
