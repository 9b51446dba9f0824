"""Course dates -> Moodle courses and registrations -> enrolments, end to end against both fakes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.runtime import Runtime
from tests.conftest import bearer
from tests.fakes.moodle_state import new_course
from tests.helpers import cancel, events, moodle_user, post_event, register, settle

CD = 9001


def moodle_course(fake: Any, idnumber: str) -> dict[str, Any] | None:
    return next((c for c in fake.courses.values() if str(c.get("idnumber")) == idnumber), None)


def calls(fake: Any, function: str) -> list[dict[str, Any]]:
    return [p for f, p in fake.calls if f == function]


@pytest.fixture
def catalogue(coursesales_fake: Any) -> Any:
    """First Aid (mapped to Moodle category 2) with a child that inherits it, and an unmapped Forklift category."""
    coursesales_fake.add_category(500, "First Aid", moodle_category_id="2")
    coursesales_fake.add_category(501, "First Aid Advanced", parent_id=500)
    coursesales_fake.add_category(600, "Forklift")
    coursesales_fake.add_course_date(CD, "2026-12-01", "2026-12-03", 500)
    return coursesales_fake


async def test_registration_makes_course_user_and_enrolment(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    r = await register(client, "d-1", "D-1001", CD)
    assert r.status_code == 202, r.text
    await settle(runtime)
    assert all(e.status == "done" for e in await events(runtime)), [
        (e.kind, e.status, e.last_error) for e in await events(runtime)
    ]
    course = moodle_course(moodle_fake, str(CD))
    assert course is not None
    assert course["fullname"] == "First Aid" and course["shortname"] == f"First Aid {CD} 2026-12-01"
    assert course["category"] == 2
    start = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())
    end = int(datetime(2026, 12, 4, tzinfo=UTC).timestamp()) - 1
    assert (course["startdate"], course["enddate"]) == (start, end)
    user = moodle_user(moodle_fake, "jane.doe@example.com")
    enrolment = moodle_fake.enrolments[(user["id"], course["id"])]  # type: ignore[index]
    assert enrolment["roles"] == [5] and (enrolment["timestart"], enrolment["timeend"]) == (start, end)
    links = (await client.get("/api/links/enrolments", headers=bearer("api"))).json()
    assert links["total"] == 1 and links["items"][0]["document_external_id"] == "D-1001"
    courses = (await client.get("/api/links/courses", headers=bearer("api"))).json()
    assert courses["items"][0] == {
        **courses["items"][0],
        "course_date_id": CD,
        "moodle_course_id": course["id"],
        "created_by_sync": True,
    }
    # The same registration again changes nothing in Moodle.
    before = len(calls(moodle_fake, "enrol_manual_enrol_users"))
    await register(client, "d-1b", "D-1001", CD)
    await settle(runtime)
    assert len(calls(moodle_fake, "enrol_manual_enrol_users")) == before


async def test_naming_category_and_course_dates_off(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    runtime.settings.courses.naming = "category"
    runtime.settings.enrolments.use_course_dates = False
    await register(client, "d-1", "D-1001", CD)
    await settle(runtime)
    course = moodle_course(moodle_fake, str(CD))
    assert course["shortname"] == f"First Aid {CD}"  # type: ignore[index]
    user = moodle_user(moodle_fake, "jane.doe@example.com")
    assert moodle_fake.enrolments[(user["id"], course["id"])]["timestart"] == 0  # type: ignore[index]


@pytest.mark.parametrize(("policy", "renamed"), [("both", True), ("moodle", False)])
async def test_name_sync_policy(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any, policy: str, renamed: bool
) -> None:
    runtime.settings.courses.name_sync = policy  # type: ignore[assignment]
    await post_event(client, {"type": "course_date.changed", "id": "c-1", "course_date_id": CD})
    await settle(runtime)
    catalogue.add_category(500, "First Aid Level 1", moodle_category_id="2")
    catalogue.add_course_date(CD, "2026-12-02", "2026-12-04", 500)
    await post_event(client, {"type": "course_date.changed", "id": "c-2", "course_date_id": CD})
    await settle(runtime)
    course = moodle_course(moodle_fake, str(CD))
    assert (course["fullname"] == "First Aid Level 1") is renamed  # type: ignore[index]
    assert course["startdate"] == int(datetime(2026, 12, 2, tzinfo=UTC).timestamp()), "dates always follow"  # type: ignore[index]


async def test_cancelled_course_date_hides_the_course(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    await post_event(client, {"type": "course_date.changed", "id": "c-1", "course_date_id": CD})
    await settle(runtime)
    assert moodle_course(moodle_fake, str(CD))["visible"] in (1, True)  # type: ignore[index]
    catalogue.add_course_date(CD, "2026-12-01", "2026-12-03", 500, status_id=3)
    await post_event(client, {"type": "course_date.changed", "id": "c-2", "course_date_id": CD})
    await settle(runtime)
    assert moodle_course(moodle_fake, str(CD))["visible"] in (0, False)  # type: ignore[index]


async def test_course_date_missing_from_answer_is_not_cancelled(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    await post_event(client, {"type": "course_date.changed", "id": "c-1", "course_date_id": CD})
    await settle(runtime)
    del catalogue.course_dates[CD]
    await post_event(client, {"type": "course_date.changed", "id": "c-2", "course_date_id": CD})
    await settle(runtime)
    assert moodle_course(moodle_fake, str(CD))["visible"] in (1, True)  # type: ignore[index]
    assert [e.status for e in await events(runtime)] == ["done", "done"]


@pytest.mark.parametrize(
    ("activities", "blocks", "filters"),
    [(True, True, True), (False, True, False), (True, False, True), (False, False, False)],
)
async def test_template_duplication_with_options(
    client: httpx.AsyncClient,
    runtime: Runtime,
    moodle_fake: Any,
    coursesales_fake: Any,
    activities: bool,
    blocks: bool,
    filters: bool,
) -> None:
    s = runtime.settings.courses
    s.include_activities, s.include_blocks, s.include_filters = activities, blocks, filters
    coursesales_fake.add_category(700, "Asbestos", moodle_category_id="2", template="2")
    coursesales_fake.add_course_date(CD, "2026-12-01", "2026-12-01", 700)
    await post_event(client, {"type": "course_date.changed", "id": "c-1", "course_date_id": CD})
    await settle(runtime)
    (dup,) = calls(moodle_fake, "core_course_duplicate_course")
    options = {o["name"]: o["value"] for o in dup["options"]}
    assert options == {"activities": str(int(activities)), "blocks": str(int(blocks)), "filters": str(int(filters))}
    assert "users" not in options, "sending users fails without moodle/backup:userinfo (recording 080)"
    course = moodle_course(moodle_fake, str(CD))
    assert (
        course is not None
        and str(course["id"]) == calls(moodle_fake, "core_course_update_courses")[0]["courses"][0]["id"]
    )
    assert not calls(moodle_fake, "core_course_create_courses")


async def test_hand_linked_course_is_adopted(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    cid = moodle_fake.state.next_id("course")
    moodle_fake.courses[cid] = new_course(cid, "Made by hand", "HAND-1", 2, idnumber=str(CD))
    await register(client, "d-1", "D-1001", CD)
    await settle(runtime)
    # Made without a look-up first (into a Moodle without it there is nothing to find): Moodle refuses the taken
    # idnumber, and only then is the course looked up and adopted; no second course is made.
    assert [c["courses"][0]["idnumber"] for c in calls(moodle_fake, "core_course_create_courses")] == [str(CD)]
    assert [c["id"] for c in moodle_fake.courses.values() if c.get("idnumber") == str(CD)] == [cid]
    assert moodle_course(moodle_fake, str(CD))["id"] == cid  # type: ignore[index]
    links = (await client.get("/api/links/courses", headers=bearer("api"))).json()
    assert links["items"][0]["created_by_sync"] is False


async def test_auto_create_off_links_only(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    runtime.settings.courses.auto_create = False
    await post_event(client, {"type": "course_date.changed", "id": "c-1", "course_date_id": CD})
    await settle(runtime)
    (event,) = await events(runtime)
    assert event.status == "done" and "auto_create is off" in event.result["note"]
    assert moodle_course(moodle_fake, str(CD)) is None
    await register(client, "d-1", "D-1001", CD)
    await settle(runtime)
    reg = next(e for e in await events(runtime) if e.kind == "registration.registered")
    assert reg.status == "failed" and "auto_create is off" in reg.last_error, "a person is told to make the course"
    cid = moodle_fake.state.next_id("course")
    moodle_fake.courses[cid] = new_course(cid, "Operator's", "OP-1", 2, idnumber=str(CD))
    await post_event(client, {"type": "course_date.changed", "id": "c-2", "course_date_id": CD})
    await settle(runtime)
    assert (await events(runtime))[-1].status == "done"
    assert not calls(moodle_fake, "core_course_create_courses")
    assert moodle_course(moodle_fake, str(CD))["id"] == cid  # type: ignore[index]


async def test_unmapped_category_reported_inherited_used(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    catalogue.add_course_date(9002, "2026-12-05", "2026-12-05", 600)
    catalogue.add_course_date(9003, "2026-12-05", "2026-12-05", 501)
    await post_event(client, {"type": "course_date.changed", "id": "c-1", "course_date_id": 9002})
    await post_event(client, {"type": "course_date.changed", "id": "c-2", "course_date_id": 9003})
    await settle(runtime)
    by_key = {e.dedupe_key: e for e in await events(runtime)}
    assert by_key["c-1"].status == "failed"
    assert "'Forklift'" in by_key["c-1"].last_error and "Moodle Category Id" in by_key["c-1"].last_error
    assert moodle_course(moodle_fake, "9002") is None
    assert by_key["c-2"].status == "done"
    assert moodle_course(moodle_fake, "9003")["category"] == 2  # type: ignore[index]
    runtime.settings.courses.inherit_category_mapping = False
    catalogue.add_course_date(9004, "2026-12-05", "2026-12-05", 501)
    await post_event(client, {"type": "course_date.changed", "id": "c-3", "course_date_id": 9004})
    await settle(runtime)
    assert (await events(runtime))[-1].status == "failed"


async def test_ineligible_course_date_not_created(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    catalogue.add_course_date(9005, "2026-12-05", "2026-12-05", 500, visibility=1)
    await post_event(client, {"type": "course_date.changed", "id": "c-1", "course_date_id": 9005})
    await settle(runtime)
    (event,) = await events(runtime)
    assert event.status == "done" and "not public" in event.result["note"]
    assert moodle_course(moodle_fake, "9005") is None


@pytest.mark.parametrize("action", ["suspend", "unenrol", "keep"])
async def test_cancellation_actions(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any, action: str
) -> None:
    runtime.settings.enrolments.unenrol_action = action  # type: ignore[assignment]
    await register(client, "d-1", "D-1001", CD)
    await settle(runtime)
    user = moodle_user(moodle_fake, "jane.doe@example.com")
    course = moodle_course(moodle_fake, str(CD))
    key = (user["id"], course["id"])  # type: ignore[index]
    timestart = moodle_fake.enrolments[key]["timestart"]
    await cancel(client, "d-2", "D-1001", CD)
    await settle(runtime)
    assert (await events(runtime))[-1].status == "done"
    if action == "suspend":
        assert moodle_fake.enrolments[key]["status"] == 1
        assert moodle_fake.enrolments[key]["timestart"] == timestart, "suspending keeps the dates"
    elif action == "unenrol":
        assert key not in moodle_fake.enrolments
        assert all("roleid" not in e for c in calls(moodle_fake, "enrol_manual_unenrol_users") for e in c["enrolments"])
    else:
        assert moodle_fake.enrolments[key]["status"] == 0


async def test_reregistration_keeps_enrolment_when_old_document_cancelled(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    await register(client, "d-1", "D-1001", CD)
    await settle(runtime)
    await register(client, "d-2", "D-1002", CD)
    await settle(runtime)
    await cancel(client, "d-3", "D-1001", CD)
    await settle(runtime)
    user = moodle_user(moodle_fake, "jane.doe@example.com")
    course = moodle_course(moodle_fake, str(CD))
    assert moodle_fake.enrolments[(user["id"], course["id"])]["status"] == 0  # type: ignore[index]
    assert "D-1002" in str((await events(runtime))[-1].result)


async def test_two_events_for_one_new_course_date_make_one_course(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    from app.jobs.tasks import run_event

    moodle_fake.latency = 0.05  # both jobs are inside Moodle calls at the same time
    a = (await post_event(client, {"type": "course_date.changed", "id": "c-1", "course_date_id": CD})).json()[
        "event_id"
    ]
    b = (await post_event(client, {"type": "course_date.changed", "id": "c-2", "course_date_id": CD})).json()[
        "event_id"
    ]
    await asyncio.gather(run_event(runtime, a), run_event(runtime, b))
    await settle(runtime)
    assert len([c for c in moodle_fake.courses.values() if str(c.get("idnumber")) == str(CD)]) == 1
    assert len(calls(moodle_fake, "core_course_create_courses")) == 1


async def test_burst_of_registrations_in_few_array_calls(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    await post_event(client, {"type": "course_date.changed", "id": "c-0", "course_date_id": CD})
    await settle(runtime)
    for n in range(1, 41):
        await register(client, f"d-{n}", f"D-{n}", CD, contact_id=n, username=f"learner{n}", email=f"l{n}@example.com")
    await settle(runtime)
    assert all(e.status == "done" for e in await events(runtime))
    assert len(calls(moodle_fake, "core_user_create_users")) == 1
    enrol_calls = calls(moodle_fake, "enrol_manual_enrol_users")
    assert len(enrol_calls) == 1 and len(enrol_calls[0]["enrolments"]) == 40


async def test_course_dates_in_the_configured_timezone(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    from zoneinfo import ZoneInfo

    runtime.settings.courses.timezone = "Australia/Brisbane"
    await post_event(client, {"type": "course_date.changed", "id": "c-1", "course_date_id": CD})
    await settle(runtime)
    course = moodle_course(moodle_fake, str(CD))
    zone = ZoneInfo("Australia/Brisbane")
    assert course["startdate"] == int(datetime(2026, 12, 1, tzinfo=zone).timestamp())  # type: ignore[index]
    assert course["enddate"] == int(datetime(2026, 12, 4, tzinfo=zone).timestamp()) - 1, "the end day is inclusive"  # type: ignore[index]


async def test_one_batch_with_a_document_twice_and_two_documents_of_one_learner(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    """Registrations and enrolment links are written as rows in one statement a batch: a Document resent under a
    new delivery id is one registration, and two Documents of one learner in one course are one enrolment link."""
    from sqlalchemy import select

    from app.db.models import EnrolmentLink, Registration

    await post_event(client, {"type": "course_date.changed", "id": "c-0", "course_date_id": CD})
    await settle(runtime)
    await register(client, "d-1", "D-1001", CD)
    await register(client, "d-1-again", "D-1001", CD)
    await register(client, "d-2", "D-1002", CD)
    await settle(runtime)
    assert [e.status for e in await events(runtime)] == ["done"] * 4
    assert len(calls(moodle_fake, "enrol_manual_enrol_users")) == 1, "one batch"
    async with runtime.sessions() as s:
        regs = (await s.execute(select(Registration).order_by(Registration.document_external_id))).scalars().all()
        links = (await s.execute(select(EnrolmentLink))).scalars().all()
    assert [(r.document_external_id, r.status) for r in regs] == [("D-1001", "registered"), ("D-1002", "registered")]
    assert [(link.document_external_id, link.status, link.course_date_id) for link in links] == [
        ("D-1002", "active", CD)
    ]
