"""The claim's indexes: one partial index per kind of readiness instead of one index on (status, next_attempt_at).

With an index leading with status, PostgreSQL answered "the oldest 100 fresh events" by collecting every fresh event,
checking each against its subject's older open events and sorting them all: 45 ms a claim at a backlog of 15,000.
Fresh events now have an index of their own in id order, which the claim walks and leaves after 100.

Revision ID: 20261205_0008
Revises: 20261125_0007
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261205_0008"
down_revision: str | None = "20261125_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FRESH = sa.text("status IN ('accepted', 'queued')")
RETRYING = sa.text("status = 'retrying'")
RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    op.create_index("ix_events_fresh", "events", ["id"], postgresql_where=FRESH, sqlite_where=FRESH)
    op.create_index(
        "ix_events_retry_due", "events", ["next_attempt_at"], postgresql_where=RETRYING, sqlite_where=RETRYING
    )
    op.create_index("ix_events_lease", "events", ["lease_until"], postgresql_where=RUNNING, sqlite_where=RUNNING)
    op.drop_index("ix_events_status_next_attempt", table_name="events")


def downgrade() -> None:
    op.create_index("ix_events_status_next_attempt", "events", ["status", "next_attempt_at"])
    op.drop_index("ix_events_lease", table_name="events")
    op.drop_index("ix_events_retry_due", table_name="events")
    op.drop_index("ix_events_fresh", table_name="events")
