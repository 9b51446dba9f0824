"""The reconcile streams: it never holds every registration at once, and reading courses a few at a time changes
nothing in what it plans or repairs."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from app.db.models import CourseDateRow, CourseLink, EnrolmentLink, Registration, UserLink
from app.runtime import Runtime
from app.sync import reconcile
from app.sync.reconcile import Reconciler
from tests.helpers import moodle_user, register, settle
from tests.test_reconcile import RUNNING
from tests.test_reconcile import reconcile as reconcile_run

COURSES, PER_COURSE, LEARNERS = 20, 10, 100
FIRST_CD, FIRST_COURSE, FIRST_USER = 7000, 700, 5000


@pytest.fixture
def peak_registrations() -> Iterator[Callable[[], int]]:
    """The most Registration rows alive at once since the fixture began."""
    alive: weakref.WeakValueDictionary[int, Registration] = weakref.WeakValueDictionary()  # models are unhashable
    peak = 0

    def loaded(target: Registration, _context: Any) -> None:
        nonlocal peak
        alive[id(target)] = target
        peak = max(peak, len(alive))

    event.listen(Registration, "load", loaded)
    yield lambda: peak
    event.remove(Registration, "load", loaded)


def key(n: int) -> str:
    """Every seventh registration names its learner by username, the others by contact id."""
    return f"username:learner{n % LEARNERS}" if n % 7 == 0 else f"contact:{n % LEARNERS + 1}"


async def seed(runtime: Runtime, moodle_fake: Any) -> None:
    """LEARNERS learners, COURSES course dates running today with PER_COURSE learners each, all enrolled."""
    from tests.fakes.moodle_state import new_course, new_user

    today = datetime.now(UTC).date()
    async with runtime.sessions() as s:
        for c in range(LEARNERS):
            s.add(UserLink(contact_id=c + 1, username=f"learner{c}", moodle_user_id=FIRST_USER + c))
            moodle_fake.users[FIRST_USER + c] = new_user(FIRST_USER + c, f"learner{c}", "L", str(c), f"l{c}@x.test")
        for d in range(COURSES):
            cdid, course_id = FIRST_CD + d, FIRST_COURSE + d
            s.add(CourseDateRow(id=cdid, start=today - timedelta(days=5), end=today + timedelta(days=5)))
            s.add(CourseLink(course_date_id=cdid, moodle_course_id=course_id))
            moodle_fake.courses[course_id] = new_course(course_id, f"Course {d}", f"C{d}", 2, idnumber=str(cdid))
            for i in range(PER_COURSE):
                n = d * PER_COURSE + i
                user_id = FIRST_USER + n % LEARNERS
                s.add(Registration(document_external_id=f"D-{n}", course_date_id=cdid, contact_key=key(n)))
                s.add(EnrolmentLink(moodle_user_id=user_id, moodle_course_id=course_id, course_date_id=cdid))
                moodle_fake.enrolments[(user_id, course_id)] = {"status": 0, "timestart": 0, "timeend": 0, "roles": [5]}
        await s.commit()


async def test_registrations_are_read_a_course_or_a_page_at_a_time(
    runtime: Runtime, moodle_fake: Any, monkeypatch: pytest.MonkeyPatch, peak_registrations: Callable[[], int]
) -> None:
    monkeypatch.setattr(reconcile, "PAGE", 7)  # course links over several pages
    monkeypatch.setattr(reconcile, "USERS_PAGE", 10)
    runtime.settings.completion.process_step_id = 77
    moodle_fake.functions.append("core_enrol_get_users_courses")
    await seed(runtime, moodle_fake)
    del moodle_fake.enrolments[(FIRST_USER + 0, FIRST_COURSE + 0)]  # D-0, by username
    del moodle_fake.enrolments[(FIRST_USER + 1, FIRST_COURSE + 0)]  # D-1, by contact id
    moodle_fake.mark_complete(FIRST_USER + 14, FIRST_COURSE + 1)  # D-14, by username
    moodle_fake.mark_complete(FIRST_USER + 15, FIRST_COURSE + 1)  # D-15, by contact id
    reconciler = Reconciler(
        sessions=runtime.sessions, moodle=runtime.moodle, coursesales=runtime.coursesales, settings=runtime.settings
    )
    report = await reconciler.run(dry_run=True)
    assert report.status == "done"
    assert [(p["action"], p["document"]) for p in report.plan if "document" in p] == [
        ("enrol", "D-0"),
        ("enrol", "D-1"),
        ("completion", "D-14"),
        ("completion", "D-15"),
    ]
    assert report.counts["enrolments_checked"] == COURSES * PER_COURSE
    assert report.counts["moodle_calls.completion_pull"] == LEARNERS, "one call per learner, each learner once"
    few_courses = 2 * runtime.settings.moodle.max_in_flight * PER_COURSE  # those being read, those found missing
    assert peak_registrations() <= few_courses < COURSES * PER_COURSE


async def test_learner_deleted_in_moodle_is_recreated_once_for_all_courses(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, coursesales_fake: Any
) -> None:
    """Courses are read a few at once: a course read before the learner was re-created is read again."""
    today = datetime.now(UTC).date()
    coursesales_fake.add_category(500, "First Aid", moodle_category_id="2")
    for cdid in (RUNNING, RUNNING + 1):
        coursesales_fake.add_course_date(cdid, today - timedelta(days=10), today + timedelta(days=30), 500)
        await register(client, f"d-{cdid}", f"D-{cdid}", cdid, contact_id=3, username="cat", email="cat@example.com")
    await settle(runtime)
    old = moodle_user(moodle_fake, "cat")
    moodle_fake.delete_user(old["id"])  # type: ignore[index]
    dry = await reconcile_run(runtime, dry_run=True)
    planned = [(p["action"], p["document"]) for p in dry.plan if p["action"] in ("enrol", "user.recreate")]
    assert planned == [
        ("user.recreate", f"D-{RUNNING}"),
        ("enrol", f"D-{RUNNING}"),
        ("user.recreate", f"D-{RUNNING + 1}"),
        ("enrol", f"D-{RUNNING + 1}"),
    ]
    run = await reconcile_run(runtime, dry_run=False)
    planned = [(p["action"], p["document"]) for p in run.plan if p["action"] in ("enrol", "user.recreate", "error")]
    assert planned == [("user.recreate", f"D-{RUNNING}"), ("enrol", f"D-{RUNNING}"), ("enrol", f"D-{RUNNING + 1}")]
    assert run.counts["users_recreated"] == 1 and run.counts["enrolments_repaired"] == 2
    new = moodle_user(moodle_fake, "cat")
    courses = [c["id"] for c in moodle_fake.courses.values() if c.get("idnumber") in (str(RUNNING), str(RUNNING + 1))]
    assert len(courses) == 2
    assert all(moodle_fake.enrolments[(new["id"], c)]["status"] == 0 for c in courses)  # type: ignore[index]


async def test_active_list_asked_only_when_someone_is_inside_their_dates(runtime: Runtime, moodle_fake: Any) -> None:
    """Outside its dates Moodle reports every enrolment inactive: the active list would tell nothing."""
    await seed(runtime, moodle_fake)
    soon = int((datetime.now(UTC) + timedelta(days=10)).timestamp())
    async with runtime.sessions() as s:
        for link in (await s.execute(sa.select(EnrolmentLink))).scalars():
            link.timestart = soon if link.moodle_course_id != FIRST_COURSE else 0  # only the first course is running
        await s.commit()
    reconciler = Reconciler(
        sessions=runtime.sessions, moodle=runtime.moodle, coursesales=runtime.coursesales, settings=runtime.settings
    )
    report = await reconciler.run(dry_run=True)
    assert report.status == "done" and not [p for p in report.plan if p["action"] in ("enrol", "user.recreate")]
    reads = [c for c in moodle_fake.calls if c[0] == "core_enrol_get_enrolled_users"]
    assert len(reads) == COURSES + 1, "every course once, and the active list of the running one"
