"""The examples in app/events/examples/: each one valid for its kind and accepted by the real endpoint."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from app.events.examples import (
    MOODLE_TOKEN_PLACEHOLDER,
    coursesales_example,
    example,
    moodle_example,
    moodle_names,
    names,
)
from app.events.payloads import MoodleEventData
from app.events.registry import COURSESALES_EVENTS, REGISTRY
from app.moodle.events import normalise, parse_body
from app.runtime import Runtime
from tests.conftest import TEST_TOKENS, bearer

COURSESALES_KINDS = sorted(COURSESALES_EVENTS)
MOODLE_FORMATS = {
    "local_webhooks.course_completed",
    "local_webhooks.user_enrolment_created",
    "tool_trigger.course_completed",
    "local_trigger.course_completed",
    "list",
}
# One real course completion (learner 5010, course 11) as each plugin posts it.
COMPLETED = ("local_webhooks.course_completed", "tool_trigger.course_completed", "local_trigger.course_completed")
FORM_POSTED = frozenset({"tool_trigger.course_completed"})  # the HTTP post step's default: a form, every value a string


def items(body: Any) -> list[dict[str, Any]]:
    return body if isinstance(body, list) else [body]


def test_every_kind_and_format_has_its_example_and_nothing_else_is_there() -> None:
    registered = {spec.example for spec in REGISTRY.values()}
    assert all(registered), "every registered kind names its example"
    assert {f"moodle/{n}.json" for n in MOODLE_FORMATS} | registered == set(names())
    assert set(moodle_names()) == MOODLE_FORMATS


def test_an_example_is_a_fresh_copy_each_time() -> None:
    first = coursesales_example("registration.registered")
    first["registration"]["contact"]["firstname"] = "Changed"
    assert coursesales_example("registration.registered")["registration"]["contact"]["firstname"] == "Jane"
    assert example("contact.upserted") == example("contact.upserted.json")


def test_an_unknown_name_is_refused_naming_what_exists() -> None:
    for name in ("nope", "../payloads.py", "moodle/../contact.upserted", "/etc/passwd"):
        with pytest.raises(KeyError, match=r"contact\.upserted\.json"):
            example(name)
    with pytest.raises(KeyError):
        coursesales_example("course.sync")  # an internal payload, not a delivery


@pytest.mark.parametrize("kind", COURSESALES_KINDS)
def test_coursesales_example_validates_against_its_model(kind: str) -> None:
    body = coursesales_example(kind)
    assert body["type"] == kind
    COURSESALES_EVENTS[kind].model_validate(body)


@pytest.mark.parametrize("kind", sorted(REGISTRY), ids=str)
def test_registered_example_is_what_its_kind_carries(kind: Any) -> None:
    """Deliveries and internal payloads validate as they are; a Moodle one once normalised, with the kind's event."""
    spec = REGISTRY[kind]
    body = example(spec.example)
    if spec.moodle_event is None:
        spec.schema.model_validate(body)
        return
    (event,) = [normalise(i) for i in parse_body(json.dumps(body).encode())]
    assert event.eventname == spec.moodle_event
    assert spec.schema is MoodleEventData
    MoodleEventData.model_validate(event.data)


@pytest.mark.parametrize("name", sorted(MOODLE_FORMATS))
def test_moodle_example_parses_to_integer_ids(name: str) -> None:
    body = moodle_example(name)
    encodings = [json.dumps(body).encode()]
    if name in FORM_POSTED:
        assert all(isinstance(v, str) for v in body.values())
        encodings.append(urlencode(body).encode())
    for raw in encodings:
        parsed = [normalise(i) for i in parse_body(raw)]
        assert len(parsed) == len(items(body))
        for event in parsed:
            assert event.relateduserid == 5010 and event.courseid == 11 and isinstance(event.timecreated, int)
            assert not {"token", "host", "extra", "user", "course"} & set(event.data)
            MoodleEventData.model_validate(event.data)


def test_the_three_plugins_post_the_same_completion() -> None:
    events = [normalise(moodle_example(name)) for name in COMPLETED]
    assert {e.dedupe_key for e in events} == {"\\core\\event\\course_completed|2|5010|1795608984"}
    assert all(e.other == {"relateduserid": "5010"} for e in events)


def test_no_moodle_example_carries_a_token_but_the_placeholder() -> None:
    for name in MOODLE_FORMATS:
        tokens = {i["token"] for i in items(moodle_example(name)) if "token" in i}
        assert tokens <= {MOODLE_TOKEN_PLACEHOLDER}, name
        replaced = {i.get("token") for i in items(moodle_example(name, token="t"))}
        assert replaced == ({"t"} if tokens else {None}), name


async def post_moodle(client: httpx.AsyncClient, name: str, token: str = TEST_TOKENS["moodle"]) -> httpx.Response:
    """An example as its plugin posts it: local_webhooks with the token in the body, the others with a header."""
    body = moodle_example(name, token=token)
    if any("token" in i for i in items(body)):
        return await client.post(
            "/webhooks/moodle", content=json.dumps(body), headers={"content-type": "application/json"}
        )
    auth = {"Authorization": f"Bearer {token}"}
    if name in FORM_POSTED:
        return await client.post("/webhooks/moodle", data=body, headers=auth)
    return await client.post("/webhooks/moodle", json=body, headers=auth)


@pytest.mark.parametrize("kind", COURSESALES_KINDS)
async def test_coursesales_example_is_accepted_by_the_endpoint(kind: str, client: httpx.AsyncClient) -> None:
    answer = await client.post("/webhooks/coursesales", json=coursesales_example(kind), headers=bearer("coursesales"))
    assert answer.status_code == 202, answer.text
    assert answer.json()["duplicate"] is False


@pytest.mark.parametrize("name", sorted(MOODLE_FORMATS))
async def test_moodle_example_is_accepted_by_the_endpoint(
    name: str, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    runtime.settings.new_enrolments.enabled = True  # so user_enrolment_created is handled, not ignored
    answer = await post_moodle(client, name)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == len(items(moodle_example(name))), answer.text


async def test_the_same_completion_through_three_plugins_is_one_event(client: httpx.AsyncClient) -> None:
    answers = [(await post_moodle(client, name)).json() for name in COMPLETED]
    assert [(a["accepted"], a["duplicate"]) for a in answers] == [(1, 0), (0, 1), (0, 1)]
    assert len({a["event_ids"][0] for a in answers}) == 1


async def test_the_placeholder_token_is_not_a_way_in(client: httpx.AsyncClient, runtime: Runtime) -> None:
    for name in ("local_webhooks.course_completed", "local_webhooks.user_enrolment_created"):
        answer = await post_moodle(client, name, token=MOODLE_TOKEN_PLACEHOLDER)
        assert answer.status_code == 401, answer.text
