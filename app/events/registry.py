"""The one table of event kinds: what each carries, who runs it, on which queue, what it needs.

Everything else is derived from it: the CourseSales event list (POST /webhooks/coursesales and its OpenAPI), the
Moodle events we handle and those we ignore on purpose, the slow kinds, the completion kinds, the kinds carrying a
contact, what an event waits for, and the metric labels. Adding a kind is one entry here and, when its work is new,
one runner (app.jobs.runners, registered for its family).

The terms the code uses (event, family, round, claim, lease, linger, hold, outcome) are defined in
docs/architecture.md, with how to add a kind step by step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel

from app.events import payloads
from app.settings import Settings


class EventKind(StrEnum):
    contact_upserted = "contact.upserted"
    registration_registered = "registration.registered"
    registration_cancelled = "registration.cancelled"
    course_date_changed = "course_date.changed"
    course_sync = "course.sync"
    moodle_course_completed = "moodle.course_completed"
    completion_pull = "completion.pull"
    moodle_user_enrolment_created = "moodle.user_enrolment_created"


class Source(StrEnum):
    coursesales = "coursesales"  # POST /webhooks/coursesales
    compat = "compat"  # the Moodle-compatible endpoint (CourseSales' "Moodle" export maps)
    moodle = "moodle"  # POST /webhooks/moodle
    internal = "internal"  # asked for by the service itself (a course to make, a completion the reconcile found)


class Family(StrEnum):
    """Kinds of one family are claimed together and run by one runner."""

    people = "people"  # contacts, registrations, cancellations: users settled, then enrolments in array calls
    courses = "courses"  # course dates: Moodle courses made (blank or duplicated) or brought in step
    completions = "completions"  # Moodle completions -> the CourseSales process step, once
    new_enrolments = "new_enrolments"  # Moodle enrolments -> registrations posted to a CourseSales form


class Lane(StrEnum):
    fast = "fast"
    # Course creation and duplication (a whole backup and restore in Moodle): own queue, own long timeout, so
    # that a killed worker's quick jobs are not held back by the slow ones' recovery delay.
    slow = "slow"


class Upstream(StrEnum):
    moodle = "moodle"
    coursesales = "coursesales"


def _always(settings: Settings) -> bool:
    return True


def _new_enrolments_on(settings: Settings) -> bool:
    return settings.new_enrolments.enabled


@dataclass(frozen=True)
class KindSpec:
    kind: EventKind
    family: Family
    schema: type[BaseModel]  # what the sender posts, or what an internal or Moodle event's payload holds
    sources: tuple[Source, ...]
    lane: Lane = Lane.fast
    # Every kind writes Moodle; these also read or write CourseSales (course dates, process steps, forms).
    needs: frozenset[Upstream] = frozenset({Upstream.moodle})
    moodle_event: str | None = None  # the Moodle event name it comes from
    enabled: Callable[[Settings], bool] = _always  # a Moodle event of a switched-off kind is recorded as ignored
    example: str = ""  # its example in app/events/examples (the tests and the OpenAPI use it)
    carries_contact: bool = False  # its payload holds a contact's data (the newest is what we know of it)
    completion: bool = False  # it runs a CourseSales process step for a Moodle completion, once


BOTH = frozenset({Upstream.moodle, Upstream.coursesales})

REGISTRY: dict[EventKind, KindSpec] = {
    spec.kind: spec
    for spec in (
        KindSpec(
            EventKind.contact_upserted, Family.people, payloads.ContactUpserted,
            sources=(Source.coursesales, Source.compat), example="contact.upserted.json", carries_contact=True,
        ),
        KindSpec(
            EventKind.registration_registered, Family.people, payloads.RegistrationRegistered,
            sources=(Source.coursesales,), example="registration.registered.json", carries_contact=True,
        ),
        KindSpec(
            EventKind.registration_cancelled, Family.people, payloads.RegistrationCancelled,
            sources=(Source.coursesales,), example="registration.cancelled.json",
        ),
        KindSpec(
            EventKind.course_date_changed, Family.courses, payloads.CourseDateChanged,
            sources=(Source.coursesales,), lane=Lane.slow, needs=BOTH, example="course_date.changed.json",
        ),
        KindSpec(
            EventKind.course_sync, Family.courses, payloads.CourseSync,
            sources=(Source.internal,), lane=Lane.slow, needs=BOTH, example="course.sync.json",
        ),
        KindSpec(
            EventKind.moodle_course_completed, Family.completions, payloads.MoodleEventData,
            sources=(Source.moodle,), needs=BOTH, moodle_event="\\core\\event\\course_completed",
            example="moodle/local_webhooks.course_completed.json", completion=True,
        ),
        KindSpec(
            EventKind.completion_pull, Family.completions, payloads.CompletionPull,
            sources=(Source.internal,), needs=BOTH, example="completion.pull.json", completion=True,
        ),
        KindSpec(
            EventKind.moodle_user_enrolment_created, Family.new_enrolments, payloads.MoodleEventData,
            sources=(Source.moodle,), needs=BOTH, moodle_event="\\core\\event\\user_enrolment_created",
            enabled=_new_enrolments_on, example="moodle/local_webhooks.user_enrolment_created.json",
        ),
    )
}  # fmt: skip

# Moodle events a forwarding plugin commonly sends that we leave alone on purpose (zulip's ignored list is the
# model); any other name is ignored too, but these are expected, not a misconfigured plugin.
MOODLE_IGNORED: dict[str, str] = {
    "\\core\\event\\user_enrolment_deleted": "an unenrolment in Moodle changes nothing in CourseSales",
    "\\core\\event\\user_enrolment_updated": "a suspension in Moodle changes nothing in CourseSales",
    "\\core\\event\\course_module_completion_updated": "only whole-course completion runs a process step",
    "\\core\\event\\user_created": "users come from CourseSales, not the other way",
    "\\core\\event\\user_updated": "users come from CourseSales, not the other way",
}

# The label of every Moodle event we do not act on, whatever its name: a sender cannot grow the series.
IGNORED_LABEL = "moodle.ignored"


def spec(kind: str) -> KindSpec | None:
    """The entry of a kind, or None for a kind the service does not know (an ignored Moodle event's name)."""
    try:
        return REGISTRY[EventKind(kind)]
    except ValueError:
        return None


def kinds_of(family: Family) -> list[EventKind]:
    return [k for k, s in REGISTRY.items() if s.family == family]


def from_source(source: Source) -> dict[str, type[BaseModel]]:
    """kind -> schema of the kinds a source posts."""
    return {str(k): s.schema for k, s in REGISTRY.items() if source in s.sources}


def moodle_handled(settings: Settings) -> dict[str, EventKind]:
    """Moodle event name -> kind, for the events we act on with these settings; every other one is ignored."""
    return {s.moodle_event: k for k, s in REGISTRY.items() if s.moodle_event and s.enabled(settings)}


def metric_label(kind: str) -> str:
    """A kind as a metric label: registered kinds by name, anything else as one value."""
    return kind if spec(kind) is not None else IGNORED_LABEL


# Derived sets, for the places that ask one question of a kind.
COURSESALES_EVENTS: dict[str, type[BaseModel]] = from_source(Source.coursesales)
SLOW_KINDS = frozenset(k for k, s in REGISTRY.items() if s.lane == Lane.slow)
COMPLETION_KINDS = tuple(k for k, s in REGISTRY.items() if s.completion)
CONTACT_KINDS = tuple(k for k, s in REGISTRY.items() if s.carries_contact)
COURSESALES_KINDS = frozenset(k for k, s in REGISTRY.items() if Upstream.coursesales in s.needs)
