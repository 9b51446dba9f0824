"""Course dates, course links, registrations, enrolment links.

Revision ID: 20261125_0002
Revises: 20261125_0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261125_0002"
down_revision: str | None = "20261125_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "course_dates",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("category_id", sa.Integer(), nullable=True),
        sa.Column("category_name", sa.String(255), nullable=True),
        sa.Column("start", sa.Date(), nullable=True),
        sa.Column("end", sa.Date(), nullable=True),
        sa.Column("status_id", sa.Integer(), nullable=True),
        sa.Column("visibility", sa.Integer(), nullable=True),
        sa.Column("fetched_at", TS, nullable=False),
    )
    op.create_table(
        "course_links",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("course_date_id", sa.Integer(), nullable=False, unique=True),
        sa.Column("moodle_course_id", sa.Integer(), nullable=False, unique=True),
        sa.Column("created_by_sync", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "registrations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("document_external_id", sa.String(128), nullable=False, unique=True),
        sa.Column("course_date_id", sa.Integer(), nullable=False),
        sa.Column("contact_key", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_registrations_course_date_id", "registrations", ["course_date_id"])
    op.create_index("ix_registrations_contact_course_date", "registrations", ["contact_key", "course_date_id"])
    op.create_table(
        "enrolment_links",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("moodle_user_id", sa.Integer(), nullable=False),
        sa.Column("moodle_course_id", sa.Integer(), nullable=False),
        sa.Column("course_date_id", sa.Integer(), nullable=False),
        sa.Column("document_external_id", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("role_id", sa.Integer(), nullable=False),
        sa.Column("timestart", sa.Integer(), nullable=False),
        sa.Column("timeend", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("moodle_user_id", "moodle_course_id", name="uq_enrolment_user_course"),
    )
    op.create_index("ix_enrolment_links_moodle_course_id", "enrolment_links", ["moodle_course_id"])


def downgrade() -> None:
    op.drop_index("ix_enrolment_links_moodle_course_id", table_name="enrolment_links")
    op.drop_table("enrolment_links")
    op.drop_index("ix_registrations_contact_course_date", table_name="registrations")
    op.drop_index("ix_registrations_course_date_id", table_name="registrations")
    op.drop_table("registrations")
    op.drop_table("course_links")
    op.drop_table("course_dates")
