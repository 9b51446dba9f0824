"""The statuses the tables hold, as enums. The columns keep them as plain strings (no database enum types: a new
value needs no migration); a StrEnum compares equal to the string read back."""

from __future__ import annotations

from enum import StrEnum


class EventStatus(StrEnum):
    accepted = "accepted"  # committed; no job queued yet (or Redis was down)
    queued = "queued"
    running = "running"
    retrying = "retrying"  # a transient failure; next_attempt_at says when
    done = "done"
    failed = "failed"  # a permanent failure; last_error says why
    needs_review = "needs_review"  # the outcome is unknown: a person decides
    ignored = "ignored"


class RunStatus(StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    stopped = "stopped"  # another reconcile held the lease


class RunTrigger(StrEnum):
    api = "api"
    cron = "cron"
    cli = "cli"


class RegistrationStatus(StrEnum):
    registered = "registered"
    cancelled = "cancelled"


class EnrolmentStatus(StrEnum):
    active = "active"
    suspended = "suspended"
    unenrolled = "unenrolled"


class CompletionStatus(StrEnum):
    """The once-only guard of a completion's process step (app.sync.completions)."""

    sending = "sending"  # the call may be in flight: a crash here means the outcome is unknown
    done = "done"
    needs_review = "needs_review"
    failed = "failed"


OPEN_STATUSES = (EventStatus.accepted, EventStatus.queued, EventStatus.running, EventStatus.retrying)
# Finished but waiting for a person: a failure, or an outcome nobody can know without looking.
ATTENTION_STATUSES = (EventStatus.failed, EventStatus.needs_review)


class OperatorRole(StrEnum):
    """What a named operator may do (app.db.accounts)."""

    admin = "admin"  # everything the API and the console offer
    viewer = "viewer"  # sees everything, changes nothing
