"""The live reads of a diagnosis (app.sync.diagnose): at most three of CourseSales and five of Moodle, all reads.

CourseSales: its course categories (one read: Options are answered whole), and its list of course dates until the
course date is found, at most COURSE_DATE_PAGES pages. Moodle: the user, the course, who is enrolled in it (all,
then only the active ones) and the learner's completion.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from app.coursesales.api import CourseSalesApi
from app.coursesales.schemas import CourseDate
from app.moodle.client import MoodleClient
from app.moodle.errors import MoodleError
from app.settings import Settings
from app.sync.courses import CategoryMapping, map_categories
from app.sync.diagnose_model import Read, Reader
from app.sync.diagnose_records import Records

COURSE_DATE_PAGES = 2  # pages of CourseSales' course-date list read to find one course date
COURSE_DATE_PAGE_SIZE = 200
NO_CRITERIA = "nocriteriaset"  # Moodle's answer for a course without completion criteria


@dataclass
class SalesFacts:
    """What CourseSales says now. ``date`` answered with no value: not found in the pages read (``whole``: in
    the whole list)."""

    date: Read[CourseDate | None] = field(default_factory=Read)
    scanned: int = 0
    whole: bool = False
    mapping: Read[dict[int, CategoryMapping]] = field(default_factory=Read)


@dataclass
class MoodleFacts:
    """What Moodle says now; a Read with no value and no ``why`` was not asked (nothing to ask about)."""

    user: Read[dict[str, Any]] = field(default_factory=Read)
    user_asked: bool = False
    course: Read[dict[str, Any]] = field(default_factory=Read)
    course_asked: bool = False
    enrolled: Read[set[int]] = field(default_factory=Read)
    active: Read[set[int]] = field(default_factory=Read)
    completion: Read[dict[str, Any]] = field(default_factory=Read)


async def read_coursesales(read: Reader, cs: CourseSalesApi, r: Records, settings: Settings) -> SalesFacts:
    facts = SalesFacts()
    if r.course_date_id is None:
        return facts
    wanted = r.course_date_id

    async def find() -> CourseDate | None:
        limit = COURSE_DATE_PAGES * COURSE_DATE_PAGE_SIZE
        facts.whole = True
        dates = cs.iter_course_dates(page_size=COURSE_DATE_PAGE_SIZE)
        try:
            async for cd in dates:
                facts.scanned += 1
                if cd.id == wanted:
                    return cd
                if facts.scanned >= limit:
                    facts.whole = False
                    return None
        finally:
            if isinstance(dates, AsyncGenerator):
                await dates.aclose()  # no page after the one that answered
        return None

    async def mapping() -> dict[int, CategoryMapping]:
        categories, forms = await cs.course_categories()
        return map_categories(categories, forms, settings.courses)

    facts.date = await read(find)
    known = facts.date.value or r.course_date_row  # not in the pages read: the category we last knew
    if known is not None and known.category_id is not None:
        facts.mapping = await read(mapping)  # CourseSales down: answered at once with why, not asked
    return facts


async def read_moodle(read: Reader, moodle: MoodleClient, r: Records) -> MoodleFacts:
    facts = MoodleFacts()
    facts.user, facts.course = await asyncio.gather(_user(read, moodle, r, facts), _course(read, moodle, r, facts))
    course = facts.course.value
    if course is None:
        return facts
    course_id = int(course["id"])
    facts.enrolled = await read(lambda: _enrolled(moodle, course_id, active_only=False))
    if facts.enrolled.value:
        facts.active = await read(lambda: _enrolled(moodle, course_id, active_only=True))
    user = facts.user.value
    if user is not None and int(user["id"]) in (facts.active.value or set()):
        facts.completion = await read(lambda: _completion(moodle, course_id, int(user["id"])))
    return facts


async def _user(read: Reader, moodle: MoodleClient, r: Records, facts: MoodleFacts) -> Read[dict[str, Any]]:
    """The linked user by id (a deleted one is still answered, renamed), else an account with the username."""
    if r.user_link is not None:
        field, value = "id", str(r.user_link.moodle_user_id)
    elif r.username:
        field, value = "username", r.username
    else:
        return Read()
    facts.user_asked = True
    found = await read(lambda: moodle.get_users_by_field(field, [value]))
    return Read(found.value[0] if found.value else None, found.why)


async def _course(read: Reader, moodle: MoodleClient, r: Records, facts: MoodleFacts) -> Read[dict[str, Any]]:
    """The linked course by id, else the course with the course date's idnumber."""
    if r.course_link is not None:
        field, value = "id", str(r.course_link.moodle_course_id)
    elif r.course_date_id is not None:
        field, value = "idnumber", str(r.course_date_id)
    else:
        return Read()
    facts.course_asked = True
    found = await read(lambda: moodle.get_courses_by_field(field, value))
    return Read(found.value[0] if found.value else None, found.why)


async def _enrolled(moodle: MoodleClient, course_id: int, *, active_only: bool) -> set[int]:
    """Who is enrolled (ids only); Moodle's "active" is a live enrolment inside its dates."""
    options: list[dict[str, Any]] = [{"name": "userfields", "value": "id"}]
    if active_only:
        options.insert(0, {"name": "onlyactive", "value": 1})
    users = await moodle.call("core_enrol_get_enrolled_users", {"courseid": course_id, "options": options})
    return {int(u["id"]) for u in users or []}


async def _completion(moodle: MoodleClient, course_id: int, user_id: int) -> dict[str, Any]:
    try:
        return await moodle.completion_status(course_id=course_id, user_id=user_id)
    except MoodleError as exc:
        if exc.errorcode == NO_CRITERIA:
            return {"no_criteria": True}
        raise
