"""Moodle -> CourseSales: completions run the process step once and never twice; new enrolments become registrations."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.db.models import Completion, Event
from app.jobs import reconcile as jobs
from app.runtime import Runtime
from tests.conftest import TEST_TOKENS
from tests.helpers import events, make_due, moodle_user, process_all, register, settle

FORWARDED = Path(__file__).parent / "fixtures" / "moodle" / "forwarded"
CD = 9500
STEP = 77


@pytest.fixture
async def enrolled(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, coursesales_fake: Any
) -> dict[str, int]:
    """Jane registered for a course date running today; her course has a completion criterion."""
    runtime.settings.completion.process_step_id = STEP
    today = datetime.now(UTC).date()
    coursesales_fake.add_category(500, "First Aid", moodle_category_id="2")
    coursesales_fake.add_course_date(CD, today - timedelta(days=3), today + timedelta(days=3), 500)
    await register(client, "d-1", "D-1001", CD)
    await settle(runtime)
    user = moodle_user(moodle_fake, "jane.doe@example.com")
    course = next(c for c in moodle_fake.courses.values() if str(c.get("idnumber")) == str(CD))
    course["criteria"] = [1]
    course["enablecompletion"] = 1
    return {"user": user["id"], "course": course["id"]}  # type: ignore[index]


def local_webhooks_body(name: str, user: int, course: int, token: str) -> str:
    """The recorded local_webhooks delivery with our ids and token put in."""
    recorded = json.loads((FORWARDED / name).read_text())["request"]["body"]
    recorded.update(relateduserid=str(user), courseid=str(course), contextinstanceid=str(course), token=token)
    recorded["other"] = {"relateduserid": str(user)}
    return json.dumps(recorded)


async def post_moodle(
    client: httpx.AsyncClient, content: str | bytes, content_type: str = "application/json", **headers: str
) -> httpx.Response:
    return await client.post("/webhooks/moodle", content=content, headers={"content-type": content_type, **headers})


def completions_of(fake: Any) -> list[tuple[str, int]]:
    return [s for s in fake.steps if s[1] == STEP]


async def test_completion_three_times_three_formats_one_step(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, coursesales_fake: Any, enrolled: dict[str, int]
) -> None:
    moodle_fake.mark_complete(enrolled["user"], enrolled["course"])
    body = local_webhooks_body(
        "local_webhooks_course_completed.json", enrolled["user"], enrolled["course"], TEST_TOKENS["moodle"]
    )
    # 1. local_webhooks as recorded: the token in the body, JSON labelled as a form.
    r1 = await post_moodle(client, body, "application/x-www-form-urlencoded")
    assert r1.status_code == 200 and r1.json()["accepted"] == 1
    timecreated = json.loads(body)["timecreated"]
    # 2. tool_trigger: a flat form of strings with other_* keys, a static bearer header.
    form = {
        "eventname": "\\core\\event\\course_completed",
        "objectid": "2",
        "courseid": str(enrolled["course"]),
        "relateduserid": str(enrolled["user"]),
        "userid": "2",
        "other_relateduserid": str(enrolled["user"]),
        "timecreated": str(timecreated),
    }
    r2 = await client.post("/webhooks/moodle", data=form, headers={"Authorization": f"Bearer {TEST_TOKENS['moodle']}"})
    assert r2.status_code == 200 and r2.json()["duplicate"] == 1
    # 3. a list (local_trigger style: event data plus user and course records), numbers as numbers.
    item = {
        **json.loads(body),
        "objectid": 2,
        "courseid": enrolled["course"],
        "user": {"id": enrolled["user"]},
        "course": {"id": 1},
    }
    r3 = await post_moodle(client, json.dumps([item]))
    assert r3.status_code == 200 and r3.json() == {
        "accepted": 0,
        "duplicate": 1,
        "ignored": 0,
        "event_ids": r1.json()["event_ids"],
    }
    await settle(runtime)
    assert completions_of(coursesales_fake) == [("D-1001", STEP)]
    # Moodle fires course_completed again later (cron): a new timecreated, a new event, still no second step.
    again = json.loads(body) | {"timecreated": timecreated + 60}
    await post_moodle(client, json.dumps(again))
    await settle(runtime)
    assert completions_of(coursesales_fake) == [("D-1001", STEP)]
    last = (await events(runtime))[-1]
    assert last.status == "done" and last.result["step"] == "already executed"


async def test_lost_webhook_found_by_reconcile(
    runtime: Runtime, moodle_fake: Any, coursesales_fake: Any, enrolled: dict[str, int]
) -> None:
    moodle_fake.functions.append("core_enrol_get_users_courses")
    moodle_fake.mark_complete(enrolled["user"], enrolled["course"])
    dry = await jobs.execute(runtime, (await jobs.create_run(runtime, dry_run=True, trigger="api")).id)
    assert [p["document"] for p in dry.plan if p["action"] == "completion"] == ["D-1001"]
    assert completions_of(coursesales_fake) == []
    run = await jobs.execute(runtime, (await jobs.create_run(runtime, dry_run=False, trigger="api")).id)
    assert run.counts["moodle_calls.completion_pull"] == 1, "one core_enrol_get_users_courses call per learner"
    await settle(runtime)
    assert completions_of(coursesales_fake) == [("D-1001", STEP)]
    await jobs.execute(runtime, (await jobs.create_run(runtime, dry_run=False, trigger="api")).id)
    await settle(runtime)
    assert completions_of(coursesales_fake) == [("D-1001", STEP)], "the guard holds across pulls"


async def test_completion_before_links_retried_then_done(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, coursesales_fake: Any, enrolled: dict[str, int]
) -> None:
    from sqlalchemy import delete, select

    from app.db.models import UserLink

    async with runtime.sessions() as s:
        links = list((await s.execute(select(UserLink))).scalars())
        await s.execute(delete(UserLink))
        await s.commit()
    moodle_fake.mark_complete(enrolled["user"], enrolled["course"])
    body = local_webhooks_body(
        "local_webhooks_course_completed.json", enrolled["user"], enrolled["course"], TEST_TOKENS["moodle"]
    )
    await post_moodle(client, body)
    await process_all(runtime)
    event = (await events(runtime))[-1]
    assert event.status == "retrying" and "not linked" in event.last_error
    async with runtime.sessions() as s:
        for link in links:
            s.add(UserLink(**link.model_dump(exclude={"id"})))
        await s.commit()
    await make_due(runtime)
    await process_all(runtime)
    assert (await events(runtime))[-1].status == "done"
    assert completions_of(coursesales_fake) == [("D-1001", STEP)]


async def test_not_complete_in_moodle_no_call(
    client: httpx.AsyncClient, runtime: Runtime, coursesales_fake: Any, enrolled: dict[str, int]
) -> None:
    body = local_webhooks_body(
        "local_webhooks_course_completed.json", enrolled["user"], enrolled["course"], TEST_TOKENS["moodle"]
    )
    await post_moodle(client, body)
    await settle(runtime)
    event = (await events(runtime))[-1]
    assert event.status == "done" and event.result["step"] == "not run"
    assert completions_of(coursesales_fake) == []


async def test_timeout_after_sending_needs_review_never_repeated(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, coursesales_fake: Any, enrolled: dict[str, int]
) -> None:
    moodle_fake.mark_complete(enrolled["user"], enrolled["course"])
    coursesales_fake.fail_next(1, "timeout_after")
    body = local_webhooks_body(
        "local_webhooks_course_completed.json", enrolled["user"], enrolled["course"], TEST_TOKENS["moodle"]
    )
    await post_moodle(client, body)
    await settle(runtime)
    event = (await events(runtime))[-1]
    assert event.status == "needs_review" and "unknown" in event.last_error
    assert len(completions_of(coursesales_fake)) == 1, "the fake applied it once; we do not know that"
    resent = json.loads(body) | {"timecreated": json.loads(body)["timecreated"] + 5}
    await post_moodle(client, json.dumps(resent))
    await settle(runtime)
    assert (await events(runtime))[-1].status == "needs_review"
    assert len(completions_of(coursesales_fake)) == 1, "no second call while the first one's outcome is unknown"


async def test_timeout_before_sending_is_retried(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, coursesales_fake: Any, enrolled: dict[str, int]
) -> None:
    moodle_fake.mark_complete(enrolled["user"], enrolled["course"])
    coursesales_fake.fail_next(1, "timeout_before")
    body = local_webhooks_body(
        "local_webhooks_course_completed.json", enrolled["user"], enrolled["course"], TEST_TOKENS["moodle"]
    )
    await post_moodle(client, body)
    await process_all(runtime)
    assert (await events(runtime))[-1].status == "retrying"
    await settle(runtime)
    assert (await events(runtime))[-1].status == "done"
    assert completions_of(coursesales_fake) == [("D-1001", STEP)]


async def test_unknown_event_recorded_as_ignored(client: httpx.AsyncClient, runtime: Runtime) -> None:
    body = json.loads((FORWARDED / "local_webhooks_user_enrolment_deleted.json").read_text())["request"]["body"]
    body["token"] = TEST_TOKENS["moodle"]
    r = await post_moodle(client, json.dumps(body))
    assert r.status_code == 200 and r.json()["ignored"] == 1
    (event,) = await events(runtime)
    assert event.status == "ignored" and "token" not in event.payload


async def test_moodle_webhook_auth_and_bad_bodies(client: httpx.AsyncClient, runtime: Runtime) -> None:
    good = {"eventname": "\\core\\event\\course_completed", "courseid": 3, "relateduserid": 4, "timecreated": 1}
    assert (await post_moodle(client, json.dumps(good))).status_code == 401
    assert (await post_moodle(client, json.dumps(good | {"token": "wrong"}))).status_code == 401
    cs = {"Authorization": f"Bearer {TEST_TOKENS['coursesales']}"}
    assert (await post_moodle(client, json.dumps(good), **cs)).status_code == 401, "CourseSales' token is not Moodle's"
    mixed = [good | {"token": TEST_TOKENS["moodle"]}, good | {"timecreated": 2}]
    assert (await post_moodle(client, json.dumps(mixed))).status_code == 401, "every item of a list carries the token"
    ok = {"Authorization": f"Bearer {TEST_TOKENS['moodle']}"}
    r = await post_moodle(client, json.dumps({"courseid": 3}), **ok)
    assert r.status_code == 400 and "eventname" in r.text
    r = await post_moodle(client, json.dumps(good | {"relateduserid": "four"}), **ok)
    assert r.status_code == 400 and "relateduserid" in r.text
    assert await events(runtime) == []


async def test_unmapped_completion_fails_and_one_alert_email(
    client: httpx.AsyncClient, runtime: Runtime, coursesales_fake: Any, smtp: Any
) -> None:
    from app.notify.alerts import AlertMailer

    runtime.settings.completion.process_step_id = STEP
    runtime.settings.completion.unmapped_retry_seconds = 0
    for n in range(3):
        item = {
            "eventname": "\\core\\event\\course_completed",
            "courseid": 99,
            "relateduserid": 400 + n,
            "timecreated": n,
            "token": TEST_TOKENS["moodle"],
        }
        await post_moodle(client, json.dumps(item))
    await settle(runtime)
    assert [e.status for e in await events(runtime)] == ["failed"] * 3
    sent = await AlertMailer(runtime.settings.alerts, sessions=runtime.sessions).flush(owner="test")
    assert sent == 1 and len(smtp.messages) == 1
    text = smtp.messages[0].get_content()
    assert all(f"{e.id}" in text for e in await events(runtime))
    assert "completion.unmapped" in smtp.messages[0]["Subject"]
    assert coursesales_fake.steps == []


@pytest.fixture
def new_enrolments(runtime: Runtime, moodle_fake: Any) -> None:
    cfg = runtime.settings.new_enrolments
    cfg.enabled, cfg.form_id, cfg.process_path_id, cfg.process_step_id = True, 1639, 12, 34
    cfg.first_name_field_id, cfg.surname_field_id, cfg.username_field_id, cfg.email_field_id = 1, 2, 3, 4
    cfg.confirm_delay_seconds = 0
    moodle_fake.viewfullnames = True


def enrolment_event(user: int, course: int, actor: int) -> str:
    body = json.loads(
        local_webhooks_body("local_webhooks_user_enrolment_created.json", user, course, TEST_TOKENS["moodle"])
    )
    body["userid"] = str(actor)
    body["objectid"] = 9000 + user
    return json.dumps(body)


async def test_new_moodle_enrolment_becomes_one_registration(
    client: httpx.AsyncClient,
    runtime: Runtime,
    moodle_fake: Any,
    coursesales_fake: Any,
    enrolled: dict[str, int],
    new_enrolments: None,
) -> None:
    (res,) = await runtime.moodle.create_users(
        [
            {
                "username": "walkin",
                "password": "Walk1n!pass",
                "firstname": "Walk",
                "lastname": "In",
                "email": "walkin@example.com",
            }
        ]
    )
    uid = res.value["id"]  # type: ignore[index]
    await runtime.moodle.enrol_users([{"roleid": 5, "userid": uid, "courseid": enrolled["course"]}])
    for _ in range(2):  # the same event twice
        r = await post_moodle(client, enrolment_event(uid, enrolled["course"], actor=2))
        assert r.status_code == 200
    await settle(runtime)
    assert len(coursesales_fake.registrations) == 1
    posted = coursesales_fake.registrations[0]
    # Each value in the form field configured for it (new_enrolments.*_field_id: 1, 2, 3, 4).
    assert (posted["form_id"], posted["process_path_id"], posted["process_step_id"]) == (1639, 12, 34)
    assert {k: posted["fields"][k] for k in (1, 2, 3, 4)} == {1: "Walk", 2: "In", 3: "walkin", 4: "walkin@example.com"}
    event = (await events(runtime))[-1]
    assert event.status == "done" and event.result["course_date_id"] == CD and event.result["document"]


async def test_rolled_back_enrolment_sends_nothing(
    client: httpx.AsyncClient, runtime: Runtime, coursesales_fake: Any, enrolled: dict[str, int], new_enrolments: None
) -> None:
    runtime.settings.new_enrolments.confirm_window_seconds = 0
    await post_moodle(client, enrolment_event(4242, enrolled["course"], actor=2))
    await settle(runtime)
    event = (await events(runtime))[-1]
    assert event.status == "done" and "rolled back" in event.result["dropped"]
    assert coursesales_fake.registrations == []


async def test_enrolment_made_by_the_service_is_not_echoed(
    client: httpx.AsyncClient, runtime: Runtime, coursesales_fake: Any, enrolled: dict[str, int], new_enrolments: None
) -> None:
    await post_moodle(client, enrolment_event(enrolled["user"], enrolled["course"], actor=3))  # 3: the token user
    await post_moodle(
        client, enrolment_event(enrolled["user"], enrolled["course"], actor=2).replace('"objectid": 9', '"objectid": 8')
    )
    await settle(runtime)
    skipped = [e.result["skipped"] for e in await events(runtime) if e.kind == "moodle.user_enrolment_created"]
    assert skipped == ["made by this service", "an enrolment this service made or knows"]
    assert coursesales_fake.registrations == []


async def test_new_enrolments_off_means_ignored(
    client: httpx.AsyncClient, runtime: Runtime, enrolled: dict[str, int]
) -> None:
    r = await post_moodle(client, enrolment_event(enrolled["user"], enrolled["course"], actor=2))
    assert r.json()["ignored"] == 1


async def test_unmapped_completion_names_the_missing_link(client: httpx.AsyncClient, runtime: Runtime) -> None:
    """The operator is told which link is missing: the learner, the course, or the registration."""
    from app.db.models import CourseLink, UserLink

    runtime.settings.completion.process_step_id = STEP
    runtime.settings.completion.unmapped_retry_seconds = 0
    async with runtime.sessions() as s:
        s.add(UserLink(contact_id=77, username="linked", moodle_user_id=500))
        s.add(CourseLink(course_date_id=4242, moodle_course_id=60))
        await s.commit()
    for user, course in ((401, 60), (500, 99), (500, 60)):
        item = {"eventname": "\\core\\event\\course_completed", "courseid": course, "relateduserid": user}
        await post_moodle(client, json.dumps({**item, "timecreated": user + course, "token": TEST_TOKENS["moodle"]}))
    await settle(runtime)
    errors = [(e.status, e.last_error) for e in await events(runtime)]
    assert [status for status, _ in errors] == ["failed"] * 3
    assert "Moodle user 401 is not linked to a CourseSales contact" in errors[0][1]
    assert "Moodle course 99 is not linked to a course date" in errors[1][1]
    assert "no active registration of linked for course date 4242" in errors[2][1]


async def test_a_refused_step_runs_once_when_its_document_is_fixed(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, coursesales_fake: Any, enrolled: dict[str, int]
) -> None:
    """A refused step leaves its guard failed; a later completion takes the guard back, once, and runs the step."""
    moodle_fake.mark_complete(enrolled["user"], enrolled["course"])
    coursesales_fake.add_document("D-OTHER")  # D-1001 unknown: the step is refused
    body = local_webhooks_body(
        "local_webhooks_course_completed.json", enrolled["user"], enrolled["course"], TEST_TOKENS["moodle"]
    )
    await post_moodle(client, body)
    await settle(runtime)
    assert (await events(runtime))[-1].status == "failed" and completions_of(coursesales_fake) == []
    async with runtime.sessions() as s:
        (guard,) = (await s.execute(select(Completion))).scalars().all()
    assert guard.status == "failed" and "not found" in (guard.error or "")

    coursesales_fake.add_document("D-1001")
    for seconds in (5, 10):  # Moodle sends the completion again, twice
        resent = json.loads(body) | {"timecreated": json.loads(body)["timecreated"] + seconds}
        await post_moodle(client, json.dumps(resent))
        await settle(runtime)
    assert completions_of(coursesales_fake) == [("D-1001", STEP)]
    assert [e.status for e in await events(runtime)][-2:] == ["done", "done"]
    assert (await events(runtime))[-1].result["step"] == "already executed"


async def test_a_failed_guard_is_taken_back_by_one_event_only(runtime: Runtime) -> None:
    from app.sync.completions import CompletionSync, Target

    async with runtime.sessions() as s:
        s.add(Completion(contact_key="contact:9", course_date_id=9, document_external_id="D-9", status="failed"))
        await s.commit()
        guard = (await s.execute(select(Completion))).scalar_one()
    sync = CompletionSync(
        sessions=runtime.sessions, moodle=runtime.moodle, coursesales=runtime.coursesales, settings=runtime.settings
    )
    target = Target("contact:9", 9, "D-9")
    first = await sync._take_guard(Event(id=1, kind="moodle.course_completed"), target, guard)
    second = await sync._take_guard(Event(id=2, kind="moodle.course_completed"), target, guard)
    assert (first, second) == (guard.id, None)
    async with runtime.sessions() as s:
        taken = await s.get_one(Completion, guard.id)
    assert (taken.status, taken.event_id) == ("sending", 1)
