"""A first sync in few Moodle calls: registrations waiting for their course cost no call, users confirmed moments
ago are not read again, course dates of a batch are made in one array call, a burst still arriving fills a batch."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.jobs import gathering
from app.jobs.tasks import run_event
from app.runtime import Runtime
from app.sync.registrations import RegistrationSync
from tests.fakes.moodle_state import new_course
from tests.helpers import events, make_due, moodle_user, post_contact, post_event, register, settle

CD = 9101


def calls(fake: Any, function: str) -> list[dict[str, Any]]:
    return [p for f, p in fake.calls if f == function]


def user_calls(fake: Any) -> list[str]:
    return [f for f, _ in fake.calls if f.startswith("core_user_")]


def learner(n: int) -> dict[str, Any]:
    return {"contact_id": n, "username": f"learner{n}", "email": f"l{n}@example.com"}


async def event_of(rt: Runtime, kind: str) -> Any:
    return next(e for e in await events(rt) if e.kind == kind)


@pytest.fixture
def catalogue(coursesales_fake: Any) -> Any:
    """A category mapped to Moodle category 2, no template (blank courses), and three course dates on it."""
    coursesales_fake.add_category(500, "First Aid", moodle_category_id="2")
    for i in range(3):
        coursesales_fake.add_course_date(CD + i, "2026-12-01", "2026-12-03", 500)
    return coursesales_fake


async def test_registration_waiting_for_its_course_makes_no_moodle_call(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    await register(client, "d-1", "D-1", CD)
    reg = await event_of(runtime, "registration.registered")
    await run_event(runtime, reg.id)  # people only: the course job (slow queue) has not run
    course_job = await event_of(runtime, "course.sync")
    assert course_job.status == "queued", "the round queues the course job it asked for (not the sweeper, later)"
    assert await runtime.queue.redis.zscore("sync:slow", f"event:{course_job.id}:0") is not None
    await make_due(runtime)
    await run_event(runtime, reg.id)
    reg = await event_of(runtime, "registration.registered")
    assert reg.status == "retrying" and "waiting for the Moodle course" in reg.last_error and reg.attempts == 2
    assert moodle_fake.calls == [], "neither the first attempt nor the retry touches Moodle while the course is missing"

    await settle(runtime)
    reg = await event_of(runtime, "registration.registered")
    assert reg.status == "done", reg.last_error
    user = moodle_user(moodle_fake, "jane.doe@example.com")
    assert user is not None and len(calls(moodle_fake, "enrol_manual_enrol_users")) == 1


async def test_course_job_finishing_while_a_registration_looks_does_not_fail_it(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await register(client, "d-1", "D-1", CD)
    reg = await event_of(runtime, "registration.registered")
    await run_event(runtime, reg.id)  # asks for the course
    course_job = await event_of(runtime, "course.sync")
    original = RegistrationSync._finished_course_jobs

    async def course_made_meanwhile(self: RegistrationSync, *args: Any) -> Any:
        found = await original(self, *args)
        await run_event(runtime, course_job.id)  # commits the course and its link between the registration's reads
        return found

    monkeypatch.setattr(RegistrationSync, "_finished_course_jobs", course_made_meanwhile)
    await make_due(runtime)
    await run_event(runtime, reg.id)
    reg = await event_of(runtime, "registration.registered")
    assert reg.status == "done", f"a course made a moment ago is not 'no course': {reg.last_error}"


async def test_registrations_whose_courses_are_linked_read_no_course_job(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why a course is missing is asked only of a course date without a link: reading every course job of a
    batch's course dates made 30,000 event objects in a first sync's drain (BENCHMARKS.md)."""
    await register(client, "r-5", "D-5", CD, **learner(5))
    await settle(runtime)  # the course made and linked
    asked: list[set[int]] = []
    original = RegistrationSync._finished_course_jobs

    async def recorded(self: RegistrationSync, course_dates: set[int], since: Any) -> Any:
        asked.append(set(course_dates))
        return await original(self, course_dates, since)

    monkeypatch.setattr(RegistrationSync, "_finished_course_jobs", recorded)
    for n in range(1, 4):
        await register(client, f"r-{n}", f"D-{n}", CD, **learner(n))
    await register(client, "r-new", "D-9", CD + 1, **learner(9))  # a course date not made yet
    await settle(runtime)
    assert all(e.status == "done" for e in await events(runtime)), [
        (e.kind, e.last_error) for e in await events(runtime)
    ]
    assert asked and all(dates == {CD + 1} for dates in asked), asked


async def test_registrations_of_users_confirmed_moments_ago_make_no_user_reads(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    await post_event(client, {"type": "course_date.changed", "id": "cd-1", "course_date_id": CD})
    for n in range(1, 4):
        await post_contact(client, f"c-{n}", **learner(n))
    await settle(runtime)
    before = len(user_calls(moodle_fake))
    for n in range(1, 4):
        await register(client, f"r-{n}", f"D-{n}", CD, **learner(n))
    await settle(runtime)
    assert all(e.status == "done" for e in await events(runtime))
    assert len(user_calls(moodle_fake)) == before, "the contacts bring nothing new: their links answer"
    (enrol,) = calls(moodle_fake, "enrol_manual_enrol_users")
    assert len(enrol["enrolments"]) == 3


async def test_linked_contacts_are_found_by_id_alone(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    """Contacts whose links the read by contact id finds make no read by username (half the links a first sync's
    drain loaded); a contact without one is still looked up by its username."""
    import sqlalchemy as sa

    await post_event(client, {"type": "course_date.changed", "id": "cd-1", "course_date_id": CD})
    for n in range(1, 4):
        await post_contact(client, f"c-{n}", **learner(n))
    await settle(runtime)
    reads: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.startswith("SELECT user_links."):
            reads.append("username" if "WHERE user_links.username" in statement else "contact_id")

    sa.event.listen(runtime.engine.sync_engine, "before_cursor_execute", record)
    try:
        for n in range(1, 4):
            await register(client, f"r-{n}", f"D-{n}", CD, **learner(n))
        await settle(runtime)
        linked_only = list(reads)
        reads.clear()
        await register(client, "r-4", "D-4", CD, **learner(4))  # a contact never seen
        await settle(runtime)
    finally:
        sa.event.remove(runtime.engine.sync_engine, "before_cursor_execute", record)
    assert all(e.status == "done" for e in await events(runtime))
    assert linked_only == ["contact_id"], linked_only
    assert reads == ["contact_id", "username"], reads


async def test_a_contact_whose_registration_made_its_user_first_makes_no_read(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    """A registration claimed before its contact makes the user: the two came in different commits of the intake,
    and the contact's, though older, was not yet visible to the claim. The contact, same data, then reads nothing:
    its user was written after it arrived. So does a contact stored a moment after its registration made the user
    (concurrent deliveries). The same contact sent again a minute later reads the user, as a repair must."""
    from sqlalchemy import update

    from app.db.models import UserLink
    from app.db.types import utcnow

    await post_event(client, {"type": "course_date.changed", "id": "cd-1", "course_date_id": CD})
    await settle(runtime)
    await post_contact(client, "c-1", **learner(1))
    await register(client, "r-1", "D-1", CD, **learner(1))
    contact_event = await event_of(runtime, "contact.upserted")
    registration = await event_of(runtime, "registration.registered")
    await _set_status(runtime, contact_event.id, "done")  # unseen by the claim: the registration does not wait
    await run_event(runtime, registration.id)
    assert user_calls(moodle_fake) == ["core_user_create_users"]
    await _set_status(runtime, contact_event.id, "queued")  # its commit seen now
    await run_event(runtime, contact_event.id)
    assert all(e.status == "done" for e in await events(runtime)), [
        (e.kind, e.last_error) for e in await events(runtime)
    ]
    assert user_calls(moodle_fake) == ["core_user_create_users"], "the user was made after the contact arrived"
    await register(client, "r-2", "D-2", CD, **learner(2))  # stored before its contact: concurrent deliveries
    await settle(runtime)
    await post_contact(client, "c-2", **learner(2))
    await settle(runtime)
    assert user_calls(moodle_fake) == ["core_user_create_users"] * 2, "made a moment before the contact arrived"
    async with runtime.sessions() as s:  # a minute passes
        await s.execute(update(UserLink).values(updated_at=utcnow() - timedelta(minutes=1)))
        await s.commit()
    await post_contact(client, "c-1-again", **learner(1))
    await settle(runtime)
    assert user_calls(moodle_fake)[2:] == ["core_user_get_users_by_field"], "sent again later: a repair reads"


async def _set_status(rt: Runtime, event_id: int, status: str) -> None:
    from sqlalchemy import update

    from app.db.models import Event

    async with rt.sessions() as s:
        await s.execute(update(Event).where(Event.id == event_id).values(status=status))
        await s.commit()


async def test_refused_enrolment_of_an_unread_user_reads_the_user_again(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    await post_event(client, {"type": "course_date.changed", "id": "cd-1", "course_date_id": CD})
    await post_contact(client, "c-1")
    await settle(runtime)
    gone = moodle_user(moodle_fake, "jane.doe@example.com")
    moodle_fake.delete_user(gone["id"])  # type: ignore[index]
    await register(client, "r-1", "D-1", CD)
    reg = await event_of(runtime, "registration.registered")
    await run_event(runtime, reg.id)
    reg = await event_of(runtime, "registration.registered")
    assert reg.status == "retrying" and "read from Moodle again" in reg.last_error
    await settle(runtime)
    reg = await event_of(runtime, "registration.registered")
    again = moodle_user(moodle_fake, "jane.doe@example.com")
    assert reg.status == "done" and again is not None and again["id"] != gone["id"]  # type: ignore[index]
    course_id = reg.result["moodle_course_id"]
    assert moodle_fake.enrolments[(again["id"], course_id)]["status"] == 0  # type: ignore[index]


async def test_course_dates_of_one_batch_are_made_in_one_array_call(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    for i in range(3):
        await post_event(client, {"type": "course_date.changed", "id": f"cd-{i}", "course_date_id": CD + i})
    catalogue.requests.clear()
    await settle(runtime)
    assert all(e.status == "done" for e in await events(runtime))
    (create,) = calls(moodle_fake, "core_course_create_courses")
    assert sorted(c["idnumber"] for c in create["courses"]) == [str(CD + i) for i in range(3)]
    assert len([r for r in catalogue.requests if "Course Dates" in r]) == 1, "CourseSales' course dates read once"
    assert calls(moodle_fake, "core_course_get_courses_by_field") == [], "made blind: nothing to find in Moodle first"


async def test_a_blind_course_create_refused_for_its_idnumber_adopts_that_course_and_makes_the_rest(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    """A course made before its link was kept (a crash between the two) or by hand: the batch create is refused
    for its taken idnumber, the refused one is isolated and looked up, and the other two are made."""
    cid = moodle_fake.state.next_id("course")
    moodle_fake.courses[cid] = new_course(cid, "Made before", "BEFORE-1", 2, idnumber=str(CD + 1))
    for i in range(3):
        await post_event(client, {"type": "course_date.changed", "id": f"cd-{i}", "course_date_id": CD + i})
    await settle(runtime)
    assert all(e.status == "done" for e in await events(runtime)), [e.last_error for e in await events(runtime)]
    looked = calls(moodle_fake, "core_course_get_courses_by_field")
    assert looked == [{"field": "idnumber", "value": str(CD + 1)}], "only the refused one is looked up"
    by_idnumber = {c.get("idnumber"): c["id"] for c in moodle_fake.courses.values()}
    assert by_idnumber[str(CD + 1)] == cid and str(CD) in by_idnumber and str(CD + 2) in by_idnumber
    assert len(moodle_fake.courses) == len(set(by_idnumber.values())), "no course made twice"


async def test_a_round_waits_while_a_burst_is_still_arriving(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Wide enough that a busy test machine still sees each step bring an arrival.
    monkeypatch.setattr(gathering, "LINGER_STEP", 0.3)
    monkeypatch.setattr(gathering, "LINGER", 10.0)
    await post_contact(client, "c-1", **learner(1))
    first = (await events(runtime))[0]
    job = asyncio.create_task(run_event(runtime, first.id))
    for n in range(2, 11):
        await asyncio.sleep(0.02)
        await post_contact(client, f"c-{n}", **learner(n))
    await job
    assert all(e.status == "done" for e in await events(runtime))
    (create,) = calls(moodle_fake, "core_user_create_users")
    assert len(create["users"]) == 10, "the batch waited for the burst rather than taking the first arrival alone"


async def test_a_drain_alone_claims_what_its_calls_carry_at_once_and_a_shared_round_one_batch(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    """A wide round (no other tenant waits) claims max_in_flight arrays of max_batch and sends them as that many
    calls; a round that shares the worker claims one batch."""
    from app.events.registry import Family
    from app.jobs import tasks

    runtime.settings.moodle.max_batch, runtime.settings.moodle.max_in_flight = 2, 3
    for n in range(1, 11):
        await post_contact(client, f"c-{n}", **learner(n))
    assert await tasks._round(runtime, Family.people, wide=False) == 2
    assert await tasks._round(runtime, Family.people, wide=True) == 6
    sizes = [len(p["users"]) for p in calls(moodle_fake, "core_user_create_users")]
    assert sizes == [2, 2, 2, 2], "each call still carries max_batch users"
    assert [e.status for e in await events(runtime)] == ["done"] * 8 + ["queued"] * 2


async def test_a_course_round_skips_a_course_date_leased_elsewhere_and_takes_over_an_expired_lease(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    from sqlalchemy import select

    from app.db import leases
    from app.db.ops_tables import Lease
    from app.events.registry import Family
    from app.jobs import tasks

    async with runtime.sessions() as s:
        assert await leases.acquire(s, f"course_date:{CD + 1}", "elsewhere", 600)
        assert await leases.acquire(s, f"course_date:{CD + 2}", "gone", -1)  # expired: free to take
        await s.commit()
    for i in range(3):
        await post_event(client, {"type": "course_date.changed", "id": f"cd-{i}", "course_date_id": CD + i})
    assert await tasks._round(runtime, Family.courses) == 3
    status = {e.payload["course_date_id"]: (e.status, e.last_error) for e in await events(runtime)}
    assert status[CD][0] == status[CD + 2][0] == "done"
    assert status[CD + 1] == ("retrying", f"course date {CD + 1} is being worked on")
    made = sorted(c["idnumber"] for c in moodle_fake.courses.values() if c.get("idnumber", "").startswith(str(CD)[:3]))
    assert made == [str(CD), str(CD + 2)]
    async with runtime.sessions() as s:
        left = [(lease.name, lease.owner) for lease in (await s.execute(select(Lease))).scalars()]
    assert left == [(f"course_date:{CD + 1}", "elsewhere")], "the round gave back the leases it took, only those"


async def test_a_blind_course_create_refused_for_a_short_name_another_course_has_says_so_and_makes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    """The short name is another course's (its idnumber is not ours): the refused create is looked up by idnumber,
    nothing is found, and a person is told which short name is taken; no course is made or adopted."""
    cid = moodle_fake.state.next_id("course")
    moodle_fake.courses[cid] = new_course(cid, "Someone else's", f"First Aid {CD} 2026-12-01", 2, idnumber="OTHER")
    await post_event(client, {"type": "course_date.changed", "id": "cd-0", "course_date_id": CD})
    await settle(runtime)
    (event,) = await events(runtime)
    assert event.status != "done" and "short name" in (event.last_error or ""), (event.status, event.last_error)
    assert calls(moodle_fake, "core_course_get_courses_by_field") == [{"field": "idnumber", "value": str(CD)}]
    assert [c["id"] for c in moodle_fake.courses.values() if c.get("idnumber") in (str(CD), "OTHER")] == [cid]
