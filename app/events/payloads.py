"""What each event kind carries: the published CourseSales event schema, and the payloads of internal and Moodle
events as the inbox keeps them. The registry (app.events.registry) names one of these per kind."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.events.examples import coursesales_example
from app.sync.contacts import Contact

MAX_INT = 2_147_483_647  # our id columns are 32-bit


class ContactUpserted(BaseModel):
    """A contact was created or changed in CourseSales: make or update its Moodle user."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": coursesales_example("contact.upserted")},
    )

    type: Literal["contact.upserted"]
    id: str = Field(..., min_length=1, max_length=128, description="The sender's delivery id; a repeat is a duplicate")
    contact: Contact


class Registered(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_external_id: str = Field(..., min_length=1, max_length=128, description="The Document's external id")
    course_date_id: int = Field(..., ge=1, le=MAX_INT)
    contact: Contact


class RegistrationRegistered(BaseModel):
    """A Document was registered: ensure the user and the course, then enrol."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": coursesales_example("registration.registered")},
    )

    type: Literal["registration.registered"]
    id: str = Field(..., min_length=1, max_length=128)
    registration: Registered


class Cancelled(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_external_id: str = Field(..., min_length=1, max_length=128)
    course_date_id: int = Field(..., ge=1, le=MAX_INT)
    contact_id: int = Field(..., ge=1, le=MAX_INT)


class RegistrationCancelled(BaseModel):
    """A Document was cancelled: suspend, unenrol or keep, per enrolments.unenrol_action."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": coursesales_example("registration.cancelled")},
    )

    type: Literal["registration.cancelled"]
    id: str = Field(..., min_length=1, max_length=128)
    registration: Cancelled


class CourseDateChanged(BaseModel):
    """A course date changed: its Moodle course is brought in step (names per policy, dates, visibility)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": coursesales_example("course_date.changed")},
    )

    type: Literal["course_date.changed"]
    id: str = Field(..., min_length=1, max_length=128)
    course_date_id: int = Field(..., ge=1, le=MAX_INT)


CourseSalesEvent = ContactUpserted | RegistrationRegistered | RegistrationCancelled | CourseDateChanged


class CourseSync(BaseModel):
    """Internal: make or bring in step the Moodle course of a course date (a registration asked, or the reconcile)."""

    model_config = ConfigDict(extra="forbid")

    course_date_id: int = Field(..., ge=1, le=MAX_INT)


class CompletionPull(BaseModel):
    """Internal: a completion the reconcile found in Moodle with no process step run yet (the webhook was lost)."""

    model_config = ConfigDict(extra="forbid")

    relateduserid: int = Field(..., ge=1, le=MAX_INT)
    courseid: int = Field(..., ge=1, le=MAX_INT)


class MoodleEventData(BaseModel):
    """A Moodle event's ``get_data()`` as app.moodle.events normalised it (integer ids, ``other`` an object)."""

    model_config = ConfigDict(extra="allow")

    eventname: str
    objectid: int | None = None
    courseid: int | None = None
    relateduserid: int | None = None
    userid: int | None = None
    timecreated: int
    other: dict[str, object] = Field(default_factory=dict)


def event_contact(event: CourseSalesEvent) -> Contact | None:
    if isinstance(event, ContactUpserted):
        return event.contact
    if isinstance(event, RegistrationRegistered):
        return event.registration.contact
    return None


def event_subject(event: CourseSalesEvent) -> str | None:
    """What the event is about: its events run in order."""
    contact = event_contact(event)
    if contact is not None:
        return contact.key
    if isinstance(event, RegistrationCancelled):
        return f"contact:{event.registration.contact_id}"
    if isinstance(event, CourseDateChanged):
        return f"course_date:{event.course_date_id}"
    return None
