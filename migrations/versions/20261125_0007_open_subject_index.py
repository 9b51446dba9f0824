"""A partial index of open events by subject, for the claim's per-subject ordering check.

Revision ID: 20261125_0007
Revises: 20261125_0006
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261125_0007"
down_revision: str | None = "20261125_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = sa.text("status IN ('accepted', 'queued', 'running', 'retrying')")


def upgrade() -> None:
    op.create_index("ix_events_open_subject", "events", ["subject", "id"], postgresql_where=OPEN, sqlite_where=OPEN)


def downgrade() -> None:
    op.drop_index("ix_events_open_subject", table_name="events")
