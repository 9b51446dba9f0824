"""The tables of running the sync rather than of its data: leases, reconcile runs, alerts, upstream states, the
contacts taken out of the sync, the audit trail. Every one carries its tenant (app.db.tenancy)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field

from app.db.statuses import RunStatus, RunTrigger
from app.db.tenancy import TenantScoped
from app.db.types import UTCDateTime, utcnow


def _ts(**kw: Any) -> Any:
    return Field(sa_column=Column(UTCDateTime(), **kw))


class Lease(TenantScoped, table=True):
    """A named lease: one holder at a time across every worker (cron jobs, the sweeper)."""

    __tablename__ = "leases"

    tenant_id: int = Field(default=None, primary_key=True)  # stamped at the flush (app.db.tenancy)
    name: str = Field(primary_key=True, max_length=64)
    owner: str = Field(max_length=64)
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class Run(TenantScoped, table=True):
    """One reconcile run: its progress, its counts and, for a dry run, its plan."""

    __tablename__ = "runs"

    id: int = Field(default=None, primary_key=True)  # None only until the insert
    kind: str = Field(default="reconcile", max_length=32)
    trigger: str = Field(default=RunTrigger.api, max_length=16)  # a RunTrigger
    dry_run: bool = False
    status: str = Field(default=RunStatus.queued, max_length=16)  # a RunStatus
    progress: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    counts: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    plan: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    finished_at: datetime | None = _ts(nullable=True)


class Alert(TenantScoped, table=True):
    """Something a person must fix; alerts of one cause are mailed together, once per window."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_cause_sent", "tenant_id", "cause", "sent_at"),)

    id: int = Field(default=None, primary_key=True)  # None only until the insert
    cause: str = Field(max_length=64)  # e.g. "category.unmapped", "event.failed", "moodle.token"
    message: str
    fix: str | None = None
    event_id: int | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    sent_at: datetime | None = _ts(nullable=True)


class UpstreamState(TenantScoped, table=True):
    """Whether Moodle or CourseSales can be used now, shared by every process: work bound for an unusable upstream
    waits (no attempt, no retry horizon spent) until a probe finds it answering again."""

    __tablename__ = "upstream_states"

    tenant_id: int = Field(default=None, primary_key=True)  # stamped at the flush (app.db.tenancy)
    name: str = Field(primary_key=True, max_length=16)  # moodle | coursesales
    state: str = Field(max_length=16)  # ok | unavailable | auth_failed
    reason: str | None = None
    since: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    checked_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    alerted_long: bool = False  # the "still waiting" alert was raised for this spell


class DoNotSync(TenantScoped, table=True):
    """A contact an operator has taken out of the sync (an erasure request): nothing is made for it again."""

    __tablename__ = "do_not_sync"

    tenant_id: int = Field(default=None, primary_key=True)  # stamped at the flush (app.db.tenancy)
    contact_key: str = Field(primary_key=True, max_length=255)
    actor: str = Field(max_length=64)
    note: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class AuditEntry(TenantScoped, table=True):
    """Every operator action: who, what, on what, why."""

    __tablename__ = "audit"

    id: int = Field(default=None, primary_key=True)  # None only until the insert
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    actor: str = Field(max_length=64)  # "api" or "cli:<user>"
    action: str = Field(max_length=32)
    target: str | None = Field(default=None, max_length=128)
    note: str | None = None
