"""The console's outcomes per hour (app.sync.overview) read the attempts of the last 24 hours or 7 days by
``started_at``: a BRIN index on PostgreSQL (a plain one on SQLite, which has no BRIN).

Attempts are appended in the order they start, so a block range's summary is tight and the index a few pages at
millions of rows. ``started_at`` is written once, when the claim inserts the attempt, and never updated: the
finishing update stays a HOT update, and a webhook's delivery writes no attempt at all (the ingest path is
untouched).

Revision ID: 20261206_0014
Revises: 20261206_0013
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

# Each block range is summarized as soon as it fills (an autovacuum work item), not at the next vacuum: a range
# not summarized yet matches every query, and a table loaded faster than it is vacuumed would be read whole.
SUMMARIZED = {"autosummarize": "on"}

revision: str = "20261206_0014"
down_revision: str | None = "20261206_0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_attempts_started", "attempts", ["started_at"], postgresql_using="brin", postgresql_with=SUMMARIZED
    )


def downgrade() -> None:
    op.drop_index("ix_attempts_started", table_name="attempts")
