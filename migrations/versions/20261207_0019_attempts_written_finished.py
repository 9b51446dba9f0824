"""An attempt's row is written once, when it is over (app.db.inbox.finish_all); a running attempt is its event.

Until now the claim wrote each attempt open (outcome ``running``) and the finish updated the newest open one: two
writes and a look-up an attempt, 30% of the database's time in a 30,200-event drain (BENCHMARKS.md). Rows left open
by earlier versions: the current attempt of a running event is dropped (its finish writes it; the event shows it
meanwhile), and any other was lost by a worker that stopped, and says so (the claim now records those itself).

Revision ID: 20261207_0019
Revises: 20261206_0018
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261207_0019"
down_revision: str | None = "20261206_0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOST_WHY = "the worker stopped before it finished (its lease ran out); the event was taken up again"


def upgrade() -> None:
    op.execute(
        sa.text(
            "DELETE FROM attempts WHERE finished_at IS NULL AND EXISTS (SELECT 1 FROM events AS e"
            " WHERE e.id = attempts.event_id AND e.status = 'running' AND e.attempts = attempts.number)"
        )
    )
    op.execute(
        sa.text("UPDATE attempts SET outcome = 'lost', error = :why WHERE finished_at IS NULL").bindparams(why=LOST_WHY)
    )


def downgrade() -> None:
    # The running attempts get their open rows back, as the claim of earlier versions wrote them.
    op.execute(
        sa.text(
            "INSERT INTO attempts (tenant_id, event_id, number, started_at, outcome)"
            " SELECT tenant_id, id, attempts, updated_at, 'running' FROM events WHERE status = 'running'"
            " AND NOT EXISTS (SELECT 1 FROM attempts AS a WHERE a.event_id = events.id AND a.number = events.attempts)"
        )
    )
