"""The event registry is whole: every kind has a schema, a runner, a queue and an example, and what is derived from
it (the CourseSales event list, the Moodle events handled, the slow and completion kinds) says the same."""

from __future__ import annotations

from importlib import resources

import pytest
from pydantic import BaseModel

from app.events.registry import (
    COMPLETION_KINDS,
    COURSESALES_EVENTS,
    MOODLE_IGNORED,
    REGISTRY,
    SLOW_KINDS,
    EventKind,
    Family,
    Lane,
    Source,
    kinds_of,
    metric_label,
    moodle_handled,
    spec,
)
from app.jobs.queue import DEFAULT_QUEUE, SLOW_QUEUE, queue_for
from app.jobs.runners import RUNNERS
from app.settings import Settings


@pytest.mark.parametrize("kind", list(EventKind))
def test_every_kind_has_an_entry_a_schema_a_runner_and_an_example(kind: EventKind) -> None:
    entry = REGISTRY[kind]
    assert entry.kind == kind
    assert issubclass(entry.schema, BaseModel)
    assert entry.family in RUNNERS, f"no runner for family {entry.family}"
    assert entry.sources, "a kind comes from somewhere"
    assert entry.example, "a kind has an example"
    assert (resources.files("app.events") / "examples" / entry.example).is_file()


def test_every_family_has_a_runner_and_a_kind() -> None:
    assert set(RUNNERS) == set(Family)
    for family in Family:
        assert kinds_of(family)


def test_the_queue_follows_the_lane() -> None:
    for kind, entry in REGISTRY.items():
        assert queue_for(kind) == (SLOW_QUEUE if entry.lane == Lane.slow else DEFAULT_QUEUE)
    assert SLOW_KINDS == {EventKind.course_date_changed, EventKind.course_sync}
    assert queue_for("moodle.user_loggedin") == DEFAULT_QUEUE
    assert queue_for(None) == DEFAULT_QUEUE


def test_derived_lists() -> None:
    assert list(COURSESALES_EVENTS) == [
        "contact.upserted",
        "registration.registered",
        "registration.cancelled",
        "course_date.changed",
    ]
    assert set(COMPLETION_KINDS) == {"moodle.course_completed", "completion.pull"}
    # every kind a sender posts has a schema; the internal kinds come from nowhere outside
    for kind, entry in REGISTRY.items():
        if Source.coursesales in entry.sources:
            assert COURSESALES_EVENTS[kind] is entry.schema


def test_moodle_events_handled_follow_the_switch() -> None:
    off = Settings(_env_file=None)
    on = Settings(_env_file=None, new_enrolments={"enabled": True})
    assert moodle_handled(off) == {"\\core\\event\\course_completed": EventKind.moodle_course_completed}
    assert moodle_handled(on) == {
        "\\core\\event\\course_completed": EventKind.moodle_course_completed,
        "\\core\\event\\user_enrolment_created": EventKind.moodle_user_enrolment_created,
    }
    assert not set(MOODLE_IGNORED) & set(moodle_handled(on)), "an event is handled or ignored, never both"


def test_metric_labels_come_from_a_fixed_set() -> None:
    assert metric_label("contact.upserted") == "contact.upserted"
    assert metric_label("moodle.user_loggedin") == "moodle.ignored"
    assert spec("no.such.kind") is None


def test_the_openapi_examples_are_the_example_files_and_validate() -> None:
    """The published OpenAPI shows the packaged examples, and each validates against its kind's schema."""
    from app.events.examples import coursesales_example, moodle_example
    from app.main import create_app

    spec_doc = create_app().openapi()
    body = spec_doc["paths"]["/webhooks/coursesales"]["post"]["requestBody"]["content"]["application/json"]
    shown = {name: e["value"] for name, e in body["examples"].items()}
    assert set(shown) == set(COURSESALES_EVENTS)
    for kind, value in shown.items():
        assert value == coursesales_example(kind)
        COURSESALES_EVENTS[kind].model_validate(value)
    moodle = spec_doc["paths"]["/webhooks/moodle"]["post"]["requestBody"]["content"]["application/json"]
    assert moodle["example"] == moodle_example("local_webhooks.course_completed")
