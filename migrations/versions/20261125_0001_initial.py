"""Inbox events and attempts, user links, leases.

Revision ID: 20261125_0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261125_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("dedupe_key", sa.String(128), nullable=False),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(255), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("secret", sa.String(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("next_attempt_at", TS, nullable=True),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("source", "dedupe_key", name="uq_events_source_dedupe_key"),
    )
    op.create_index("ix_events_status_next_attempt", "events", ["status", "next_attempt_at"])
    op.create_index("ix_events_subject", "events", ["subject"])
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("event_id", sa.Integer(), sa.ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.String(), nullable=True),
    )
    op.create_index("ix_attempts_event_id", "attempts", ["event_id"])
    op.create_table(
        "user_links",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("contact_id", sa.Integer(), nullable=True, unique=True),
        sa.Column("username", sa.String(100), nullable=False, unique=True),
        sa.Column("moodle_user_id", sa.Integer(), nullable=False, unique=True),
        sa.Column("password_digest", sa.String(64), nullable=True),
        sa.Column("data_digest", sa.String(64), nullable=True),
        sa.Column("suspended_by_sync", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("user_links")
    op.drop_index("ix_attempts_event_id", table_name="attempts")
    op.drop_table("attempts")
    op.drop_index("ix_events_subject", table_name="events")
    op.drop_index("ix_events_status_next_attempt", table_name="events")
    op.drop_table("events")
