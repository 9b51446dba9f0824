"""Bringing one course date into Moodle: read CourseSales, find or make the course, keep it in step."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import CourseDateRow, CourseLink
from app.db.types import utcnow
from app.moodle.client import MoodleClient
from app.moodle.errors import MoodleConflict, MoodlePermanentError
from app.settings import CoursesSettings
from app.sync.courses import CategoryMapping, eligibility, map_categories, plan_course

log = structlog.get_logger(__name__)


class CourseProblem(Exception):
    """The course cannot be made until a person fixes something (the message says what)."""

    def __init__(self, message: str, *, cause: str = "course.failed") -> None:
        super().__init__(message)
        self.cause = cause


@dataclass
class CourseResult:
    moodle_course_id: int | None
    action: str
    reason: str = ""


async def remember_course_date(session: AsyncSession, cd: Any) -> CourseDateRow:
    """Keep what CourseSales said about a course date (webhooks carry only its id); the caller commits."""
    row = await session.get(CourseDateRow, cd.id)
    if row is None:
        row = CourseDateRow(id=cd.id)
        session.add(row)
    row.category_id, row.category_name = cd.category_id, cd.category_name
    row.start, row.end, row.status_id, row.visibility = cd.start, cd.end, cd.status_id, cd.visibility
    row.fetched_at = utcnow()
    return row


class Catalogue:
    """CourseSales' course categories and their Moodle mapping, read once per job."""

    def __init__(self, coursesales: Any, settings: CoursesSettings) -> None:
        self.coursesales = coursesales
        self.settings = settings
        self._mapping: dict[int, CategoryMapping] | None = None

    async def mapping(self) -> dict[int, CategoryMapping]:
        if self._mapping is None:
            categories, forms = await self.coursesales.course_categories()
            self._mapping = map_categories(categories, forms, self.settings)
        return self._mapping


class CourseSync:
    """Finds, creates, duplicates or updates the Moodle course of a course date. The caller commits."""

    def __init__(
        self,
        *,
        session: AsyncSession,
        moodle: MoodleClient,
        coursesales: Any,
        settings: CoursesSettings,
        catalogue: Catalogue | None = None,
    ) -> None:
        self.session = session
        self.moodle = moodle
        self.coursesales = coursesales
        self.settings = settings
        self.catalogue = catalogue or Catalogue(coursesales, settings)

    async def course_date(self, course_date_id: int, *, refresh: bool = False) -> CourseDateRow | None:
        """The course date as CourseSales last described it; read again when stale or asked to."""
        row = await self.session.get(CourseDateRow, course_date_id)
        fresh = row is not None and utcnow() - row.fetched_at < timedelta(seconds=self.settings.cache_seconds)
        if fresh and not refresh:
            return row
        async for cd in self.coursesales.iter_course_dates():
            if cd.id == course_date_id:
                return await self.remember(cd)
        return row  # missing from the answer is not a cancellation: keep what we knew

    async def remember(self, cd: Any) -> CourseDateRow:
        return await remember_course_date(self.session, cd)

    async def link_of(self, course_date_id: int) -> CourseLink | None:
        return (
            await self.session.execute(select(CourseLink).where(CourseLink.course_date_id == course_date_id))
        ).scalar_one_or_none()

    async def ensure(self, course_date_id: int, *, refresh: bool = False, dry_run: bool = False) -> CourseResult:
        """Make the Moodle course match the course date; raises CourseProblem when a person must act."""
        cd = await self.course_date(course_date_id, refresh=refresh)
        link = await self.link_of(course_date_id)
        if cd is None:
            if link is not None:
                return CourseResult(link.moodle_course_id, "none", "not in CourseSales' list: left as it is")
            raise CourseProblem(f"course date {course_date_id} is not in CourseSales' list of Moodle course dates")
        existing, link = await self._existing(course_date_id, link)
        mapping = (await self.catalogue.mapping()).get(cd.category_id or -1)
        plan = plan_course(cd, mapping, existing, linked=link is not None, settings=self.settings)
        if plan.action == "skip":
            if eligibility(cd, self.settings) is None and self.settings.auto_create:
                raise CourseProblem(plan.reason, cause="category.unmapped")
            return CourseResult(None, "skip", plan.reason)  # not due in Moodle: nothing to fix
        if dry_run or plan.action == "none":
            return CourseResult(plan.moodle_course_id, plan.action, plan.reason)
        if plan.action in ("create", "duplicate"):
            course_id = await self._make(plan)
        else:
            course_id = int(plan.moodle_course_id)  # type: ignore[arg-type]
            if plan.course:
                await self._update(course_id, plan.course)
        self._link(course_date_id, course_id, link, created=plan.action in ("create", "duplicate"))
        log.info("moodle.course." + plan.action, course_date_id=course_date_id, moodle_course_id=course_id)
        return CourseResult(course_id, plan.action, plan.reason)

    async def _existing(
        self, course_date_id: int, link: CourseLink | None
    ) -> tuple[dict[str, Any] | None, CourseLink | None]:
        if link is not None:
            found = await self.moodle.get_courses_by_field("id", link.moodle_course_id)
            if found:
                return found[0], link
            await self.session.delete(link)  # deleted in Moodle: look it up afresh
            await self.session.flush()
        found = await self.moodle.get_courses_by_field("idnumber", str(course_date_id))
        return (found[0] if found else None), None

    async def _make(self, plan: Any) -> int:
        course = plan.course
        if plan.action == "create":
            (res,) = await self.moodle.create_courses([{**course, "enablecompletion": 1}])
            if res.ok:
                return int(res.value["id"])
            raise CourseProblem(await self._explain(res.error, course))
        template = await self._template_id(plan.template)
        try:
            copy = await self.moodle.duplicate_course(
                template_id=template,
                fullname=course["fullname"],
                shortname=course["shortname"],
                category_id=course["categoryid"],
                visible=True,
                options={
                    "activities": self.settings.include_activities,
                    "blocks": self.settings.include_blocks,
                    "filters": self.settings.include_filters,
                },
            )
            course_id = int(copy["id"])
        except MoodleConflict:
            # A copy made before a crash, before its idnumber was set: find it by its short name.
            orphan = await self.moodle.get_courses_by_field("shortname", course["shortname"])
            if not orphan or orphan[0].get("idnumber"):
                raise CourseProblem(f"Moodle short name {course['shortname']!r} is taken by another course") from None
            course_id = int(orphan[0]["id"])
        except MoodlePermanentError as exc:
            raise CourseProblem(f"Moodle refused to copy template course {plan.template!r}: {exc}") from None
        # core_course_duplicate_course takes no idnumber or dates: set them on the copy.
        await self._update(course_id, {k: course[k] for k in ("idnumber", "startdate", "enddate")})
        return course_id

    async def _template_id(self, template: str) -> int:
        if template.isdigit():
            return int(template)
        found = await self.moodle.get_courses_by_field("shortname", template)
        if not found:
            raise CourseProblem(f"template course {template!r} is not in Moodle (give its id or short name)")
        return int(found[0]["id"])

    async def _update(self, course_id: int, changes: dict[str, Any]) -> None:
        warnings = await self.moodle.update_courses([{"id": course_id, **changes}])
        if course_id in warnings:
            w = warnings[course_id]
            raise CourseProblem(
                f"Moodle refused to update course {course_id}: {w.get('message')} [{w.get('warningcode')}]"
            )

    async def _explain(self, error: Any, course: dict[str, Any]) -> str:
        if isinstance(error, MoodleConflict):
            return f"Moodle refused the course: {error.message} (short name {course['shortname']!r} or idnumber {course['idnumber']!r})"
        return f"Moodle refused to create the course in category {course['categoryid']}: {error}"

    def _link(self, course_date_id: int, course_id: int, link: CourseLink | None, *, created: bool) -> None:
        if link is None or link.moodle_course_id != course_id:
            if link is None:
                link = CourseLink(course_date_id=course_date_id, moodle_course_id=course_id, created_by_sync=created)
                self.session.add(link)
            link.moodle_course_id = course_id
        link.updated_at = utcnow()
