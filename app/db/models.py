"""Tables: the inbox of events with their attempts, the links between the two systems, leases."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint, text
from sqlmodel import Field

from app.db.ops_tables import Alert, AuditEntry, DoNotSync, Lease, Run, UpstreamState  # re-exported: one import site
from app.db.statuses import (  # the statuses live there; re-exported here, where the tables that hold them are
    ATTENTION_STATUSES,
    OPEN_STATUSES,
    CompletionStatus,
    EnrolmentStatus,
    EventStatus,
    RegistrationStatus,
    RunStatus,
    RunTrigger,
)
from app.db.tenancy import TenantScoped
from app.db.types import UTCDateTime, utcnow

__all__ = [
    "ATTENTION_STATUSES",
    "OPEN_STATUSES",
    "Alert",
    "AuditEntry",
    "CompletionStatus",
    "DoNotSync",
    "EnrolmentStatus",
    "EventStatus",
    "Lease",
    "RegistrationStatus",
    "Run",
    "RunStatus",
    "RunTrigger",
    "UpstreamState",
]

# The partial indexes' conditions, on the same status values.
OPEN_WHERE = text("status IN ('accepted', 'queued', 'running', 'retrying')")
FRESH_WHERE = text("status IN ('accepted', 'queued')")
RETRYING_WHERE = text("status = 'retrying'")
RUNNING_WHERE = text("status = 'running'")
ATTENTION_WHERE = text("status IN ('failed', 'needs_review')")
KEPT_WHERE = text("payload IS NOT NULL")
SUMMARIZED = {"autosummarize": "on"}  # a BRIN index's block ranges summarized as they fill, not at the next vacuum


def _ts(**kw: Any) -> Any:
    return Field(sa_column=Column(UTCDateTime(), **kw))


class Event(TenantScoped, table=True):
    """One delivery into the inbox, unique per (tenant, source, dedupe_key)."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("tenant_id", "source", "dedupe_key", name="uq_events_tenant_source_dedupe_key"),
        # The claim's, one per kind of readiness (app.db.claim): none leads with status, fresh ones go in id order.
        Index("ix_events_fresh", "tenant_id", "id", postgresql_where=FRESH_WHERE, sqlite_where=FRESH_WHERE),
        Index(
            "ix_events_retry_due",
            "tenant_id",
            "next_attempt_at",
            postgresql_where=RETRYING_WHERE,
            sqlite_where=RETRYING_WHERE,
        ),
        Index(
            "ix_events_lease", "tenant_id", "lease_until", postgresql_where=RUNNING_WHERE, sqlite_where=RUNNING_WHERE
        ),
        Index("ix_events_subject", "tenant_id", "subject"),
        # The claim's "an older event of this subject is still open" probe: a small index of open events only.
        Index(
            "ix_events_open_subject", "tenant_id", "subject", "id", postgresql_where=OPEN_WHERE, sqlite_where=OPEN_WHERE
        ),
        # Rows are kept for good (payloads purged): timers read small partial indexes, never the whole table. The
        # purge walks events still holding a payload; /metrics counts the open ones and those waiting for a person.
        Index("ix_events_payload_kept", "updated_at", postgresql_where=KEPT_WHERE, sqlite_where=KEPT_WHERE),
        Index(
            "ix_events_attention", "tenant_id", "status", postgresql_where=ATTENTION_WHERE, sqlite_where=ATTENTION_WHERE
        ),
    )

    id: int = Field(default=None, primary_key=True)  # None only until the insert
    source: str = Field(max_length=32)
    kind: str = Field(max_length=64)
    dedupe_key: str = Field(max_length=128)
    body_hash: str = Field(max_length=64)
    # What the work is about (e.g. "contact:1234"): events of one subject run in order.
    subject: str | None = Field(default=None, max_length=255)
    payload: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    # The contact's password, Fernet-encrypted; dropped once applied.
    secret: str | None = Field(default=None)
    status: str = Field(default=EventStatus.accepted, max_length=16)
    attempts: int = 0
    last_error: str | None = None
    # Why it cannot run yet (an upstream not configured), shown with it; cleared when a job takes it.
    waiting_for: str | None = Field(default=None, max_length=255)
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    next_attempt_at: datetime | None = _ts(nullable=True)
    lease_until: datetime | None = _ts(nullable=True)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Attempt(TenantScoped, table=True):
    """One run of an event's job: when, how it ended, and why."""

    __tablename__ = "attempts"
    __table_args__ = (Index("ix_attempts_started", "started_at", postgresql_using="brin", postgresql_with=SUMMARIZED),)

    id: int = Field(default=None, primary_key=True)  # None only until the insert
    event_id: int = Field(foreign_key="events.id", index=True, ondelete="CASCADE")
    number: int
    started_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    finished_at: datetime | None = _ts(nullable=True)
    outcome: str = Field(default=EventStatus.running, max_length=16)  # an EventStatus
    error: str | None = None


class UserLink(TenantScoped, table=True):
    """A CourseSales contact and the Moodle user made or adopted for it."""

    __tablename__ = "user_links"
    __table_args__ = (
        UniqueConstraint("tenant_id", "contact_id", name="uq_user_links_tenant_contact"),
        UniqueConstraint("tenant_id", "username", name="uq_user_links_tenant_username"),
        UniqueConstraint("tenant_id", "moodle_user_id", name="uq_user_links_tenant_moodle_user"),
    )

    id: int = Field(default=None, primary_key=True)  # None only until the insert
    contact_id: int | None = None
    username: str = Field(max_length=100)
    moodle_user_id: int
    # HMAC of the password last applied: a change is sent, an unchanged one is not.
    password_digest: str | None = Field(default=None, max_length=64)
    # HMAC of the contact fields last written: decides for fields this token cannot read back.
    data_digest: str | None = Field(default=None, max_length=64)
    suspended_by_sync: bool = False
    # An account that existed before the sync linked it (users.adopt_existing): its password stays its own.
    adopted: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))

    @property
    def contact_key(self) -> str:
        """The key events and registrations use for this contact (as Contact.key)."""
        return f"contact:{self.contact_id}" if self.contact_id else f"username:{self.username}"


class CourseDateRow(TenantScoped, table=True):
    """What CourseSales last said about a course date (the webhooks carry only its id)."""

    __tablename__ = "course_dates"

    # A CourseSales id is unique within its account only: the key is (tenant, id).
    tenant_id: int = Field(default=None, primary_key=True)  # stamped at the flush (app.db.tenancy)
    id: int = Field(primary_key=True, description="CourseSales course date id")
    category_id: int | None = None
    category_name: str | None = Field(default=None, max_length=255)
    start: date | None = None
    end: date | None = None
    status_id: int | None = None
    visibility: int | None = None
    fetched_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class CourseLink(TenantScoped, table=True):
    """A course date and its Moodle course (idnumber = course date id)."""

    __tablename__ = "course_links"
    __table_args__ = (
        UniqueConstraint("tenant_id", "course_date_id", name="uq_course_links_tenant_course_date"),
        UniqueConstraint("tenant_id", "moodle_course_id", name="uq_course_links_tenant_moodle_course"),
    )

    id: int = Field(default=None, primary_key=True)  # None only until the insert
    course_date_id: int
    moodle_course_id: int
    created_by_sync: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Registration(TenantScoped, table=True):
    """A CourseSales Document: one contact registered for one course date."""

    __tablename__ = "registrations"
    __table_args__ = (
        UniqueConstraint("tenant_id", "document_external_id", name="uq_registrations_tenant_document"),
        Index("ix_registrations_course_date_id", "tenant_id", "course_date_id"),
        Index("ix_registrations_contact_course_date", "tenant_id", "contact_key", "course_date_id"),
    )

    id: int = Field(default=None, primary_key=True)  # None only until the insert
    document_external_id: str = Field(max_length=128)
    course_date_id: int
    contact_key: str = Field(max_length=255)
    status: str = Field(default=RegistrationStatus.registered, max_length=16)  # a RegistrationStatus
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class EnrolmentLink(TenantScoped, table=True):
    """A Moodle manual enrolment this service made, as it should be."""

    __tablename__ = "enrolment_links"
    __table_args__ = (
        UniqueConstraint("tenant_id", "moodle_user_id", "moodle_course_id", name="uq_enrolment_tenant_user_course"),
        Index("ix_enrolment_links_moodle_course_id", "tenant_id", "moodle_course_id"),
    )

    id: int = Field(default=None, primary_key=True)  # None only until the insert
    moodle_user_id: int
    moodle_course_id: int
    course_date_id: int
    document_external_id: str | None = Field(default=None, max_length=128)
    status: str = Field(default=EnrolmentStatus.active, max_length=16)  # an EnrolmentStatus
    role_id: int = 5
    timestart: int = 0
    timeend: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Completion(TenantScoped, table=True):
    """The guard of the completion step: at most one per (learner, course date), whatever Moodle resends."""

    __tablename__ = "completions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "contact_key", "course_date_id", name="uq_completion_tenant_learner_course_date"),
    )

    id: int = Field(default=None, primary_key=True)  # None only until the insert
    contact_key: str = Field(max_length=255)
    course_date_id: int
    document_external_id: str = Field(max_length=128)
    status: str = Field(default=CompletionStatus.sending, max_length=16)  # a CompletionStatus
    event_id: int | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class UserIntent(TenantScoped, table=True):
    """A Moodle user the sync is about to create, committed before the create call and dropped with its link: an
    unlinked account with this username is then the sync's own (a crash or a race between create and link), never
    someone else's account to take over."""

    __tablename__ = "user_intents"
    __table_args__ = (UniqueConstraint("tenant_id", "username", name="uq_user_intents_tenant_username"),)

    id: int = Field(default=None, primary_key=True)  # None only until the insert
    username: str = Field(max_length=100)
    contact_id: int | None = None
    event_id: int | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
