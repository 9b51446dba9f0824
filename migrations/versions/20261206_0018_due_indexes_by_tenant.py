"""The claim's due indexes lead with the tenant: ``ix_events_retry_due`` (tenant_id, next_attempt_at) of retrying
events and ``ix_events_lease`` (tenant_id, lease_until) of running ones.

A claim's "due" pick (a retry whose time has come, a run whose lease ran out) is scoped to its tenant. With the
index on the time alone, the planner preferred the tenant's index of open events and filtered all of them: 16 ms a
claim at a backlog of 30,000, on every round (BENCHMARKS.md, "Measured design decisions"). The sweeper's read across
tenants walks these small partial indexes whole.

Revision ID: 20261206_0018
Revises: 20261206_0017
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261206_0018"
down_revision: str | None = "20261206_0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RETRYING = sa.text("status = 'retrying'")
RUNNING = sa.text("status = 'running'")


def _recreate(name: str, columns: list[str], where: sa.TextClause) -> None:
    op.drop_index(name, table_name="events")
    op.create_index(name, "events", columns, postgresql_where=where, sqlite_where=where)


def upgrade() -> None:
    _recreate("ix_events_retry_due", ["tenant_id", "next_attempt_at"], RETRYING)
    _recreate("ix_events_lease", ["tenant_id", "lease_until"], RUNNING)


def downgrade() -> None:
    _recreate("ix_events_retry_due", ["next_attempt_at"], RETRYING)
    _recreate("ix_events_lease", ["lease_until"], RUNNING)
