"""Indexes for what runs on a timer, so that its cost follows the open work, not the years of events kept.

Event rows are kept for good (only their payloads are purged), and two timers read them: the sweeper's retention
purge, on every sweep, and /metrics, on every scrape. Both walked the whole table: 220 and 275 ms at 1,000,000
events. The purge now walks the events still holding a payload (about the retention window), and /metrics counts
the open events (ix_events_open_subject) and those waiting for a person (failed, needs review) on partial indexes.

Revision ID: 20261206_0009
Revises: 20261205_0008
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261206_0009"
down_revision: str | None = "20261205_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEPT = sa.text("payload IS NOT NULL")
ATTENTION = sa.text("status IN ('failed', 'needs_review')")


def upgrade() -> None:
    op.create_index("ix_events_payload_kept", "events", ["updated_at"], postgresql_where=KEPT, sqlite_where=KEPT)
    op.create_index("ix_events_attention", "events", ["status"], postgresql_where=ATTENTION, sqlite_where=ATTENTION)


def downgrade() -> None:
    op.drop_index("ix_events_attention", table_name="events")
    op.drop_index("ix_events_payload_kept", table_name="events")
