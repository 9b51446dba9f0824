"""Every row carries its tenant: ``tenant_id`` on every table but the registry's and the keyring, first in every
unique key and natural primary key. Existing rows are the tenant ``default``'s (0), so an upgraded single-provider
install keeps every link and event where it was.

PostgreSQL adds the column in place (a default on ADD COLUMN is not a rewrite); SQLite copies each table (batch
mode). The unnamed unique constraints of earlier migrations are found by the names PostgreSQL gave them
(``<table>_<column>_key``), which the naming convention below also gives SQLite's reflected ones. Downgrading
deletes the rows of registered tenants first: the older schema has no room for them.

Revision ID: 20261206_0017
Revises: 20261206_0016
Create Date: 2026-12-06
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "20261206_0017"
down_revision: str | None = "20261206_0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAMES = {"uq": "%(table_name)s_%(column_0_name)s_key", "pk": "%(table_name)s_pkey"}
OPEN = sa.text("status IN ('accepted', 'queued', 'running', 'retrying')")
FRESH = sa.text("status IN ('accepted', 'queued')")
ATTENTION = sa.text("status IN ('failed', 'needs_review')")


@dataclass
class Index:
    name: str
    columns: list[str]
    where: Any = None

    def create(self, table: str, *, tenant: bool) -> None:
        columns = ["tenant_id", *self.columns] if tenant else self.columns
        op.create_index(self.name, table, columns, postgresql_where=self.where, sqlite_where=self.where)


@dataclass
class Change:
    table: str
    # unique keys: (old name, new name, columns without the tenant)
    uniques: list[tuple[str, str, list[str]]] = field(default_factory=list)
    primary_key: list[str] | None = None  # a natural key: (tenant_id, *these)
    indexes: list[Index] = field(default_factory=list)


CHANGES = [
    Change(
        "events",
        uniques=[("uq_events_source_dedupe_key", "uq_events_tenant_source_dedupe_key", ["source", "dedupe_key"])],
        indexes=[
            Index("ix_events_fresh", ["id"], FRESH),
            Index("ix_events_subject", ["subject"]),
            Index("ix_events_open_subject", ["subject", "id"], OPEN),
            Index("ix_events_attention", ["status"], ATTENTION),
        ],
    ),
    Change("attempts"),
    Change(
        "user_links",
        uniques=[
            ("user_links_contact_id_key", "uq_user_links_tenant_contact", ["contact_id"]),
            ("user_links_username_key", "uq_user_links_tenant_username", ["username"]),
            ("user_links_moodle_user_id_key", "uq_user_links_tenant_moodle_user", ["moodle_user_id"]),
        ],
    ),
    Change("leases", primary_key=["name"]),
    Change("course_dates", primary_key=["id"]),
    Change(
        "course_links",
        uniques=[
            ("course_links_course_date_id_key", "uq_course_links_tenant_course_date", ["course_date_id"]),
            ("course_links_moodle_course_id_key", "uq_course_links_tenant_moodle_course", ["moodle_course_id"]),
        ],
    ),
    Change(
        "registrations",
        uniques=[
            ("registrations_document_external_id_key", "uq_registrations_tenant_document", ["document_external_id"])
        ],
        indexes=[
            Index("ix_registrations_course_date_id", ["course_date_id"]),
            Index("ix_registrations_contact_course_date", ["contact_key", "course_date_id"]),
        ],
    ),
    Change(
        "enrolment_links",
        uniques=[
            ("uq_enrolment_user_course", "uq_enrolment_tenant_user_course", ["moodle_user_id", "moodle_course_id"])
        ],
        indexes=[Index("ix_enrolment_links_moodle_course_id", ["moodle_course_id"])],
    ),
    Change("runs"),
    Change("alerts", indexes=[Index("ix_alerts_cause_sent", ["cause", "sent_at"])]),
    Change(
        "completions",
        uniques=[
            (
                "uq_completion_learner_course_date",
                "uq_completion_tenant_learner_course_date",
                ["contact_key", "course_date_id"],
            )
        ],
    ),
    Change("user_intents", uniques=[("user_intents_username_key", "uq_user_intents_tenant_username", ["username"])]),
    Change("upstream_states", primary_key=["name"]),
    Change("do_not_sync", primary_key=["contact_key"]),
    Change("audit"),
    Change("operators", uniques=[("operators_name_key", "uq_operators_tenant_name", ["name"])]),
]


def upgrade() -> None:
    for change in CHANGES:
        for index in change.indexes:
            op.drop_index(index.name, table_name=change.table)
        with op.batch_alter_table(change.table, naming_convention=NAMES) as batch:
            batch.add_column(sa.Column("tenant_id", sa.Integer(), nullable=False, server_default="0"))
            for old, new, columns in change.uniques:
                batch.drop_constraint(old, type_="unique")
                batch.create_unique_constraint(new, ["tenant_id", *columns])
            if change.primary_key:
                batch.drop_constraint(f"{change.table}_pkey", type_="primary")
                batch.create_primary_key(f"{change.table}_pkey", ["tenant_id", *change.primary_key])
        # No default from here on: a row written without its tenant is refused, never quietly the default's.
        with op.batch_alter_table(change.table) as batch:
            batch.alter_column("tenant_id", server_default=None, existing_type=sa.Integer(), existing_nullable=False)
        for index in change.indexes:
            index.create(change.table, tenant=True)


def downgrade() -> None:
    for change in reversed(CHANGES):
        op.execute(sa.table(change.table, sa.column("tenant_id")).delete().where(sa.column("tenant_id") != 0))
        for index in change.indexes:
            op.drop_index(index.name, table_name=change.table)
        with op.batch_alter_table(change.table, naming_convention=NAMES) as batch:
            if change.primary_key:
                batch.drop_constraint(f"{change.table}_pkey", type_="primary")
                batch.create_primary_key(f"{change.table}_pkey", change.primary_key)
            for old, new, columns in change.uniques:
                batch.drop_constraint(new, type_="unique")
                batch.create_unique_constraint(old, columns)
            batch.drop_column("tenant_id")
        for index in change.indexes:
            index.create(change.table, tenant=False)
