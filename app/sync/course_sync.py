"""Bringing course dates into Moodle: read CourseSales, find or make their courses, keep them in step."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.coursesales.api import CourseSalesApi
from app.db.models import CourseDateRow, CourseLink
from app.db.types import utcnow
from app.moodle.client import MoodleClient
from app.moodle.errors import MoodleConflict, MoodleError, MoodlePermanentError
from app.settings import CoursesSettings
from app.sync.course_dates import Catalogue, remembered
from app.sync.courses import CategoryMapping, CoursePlan, eligibility, plan_course
from app.sync.links import course_links

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


class CourseSync:
    """Finds, creates, duplicates or updates the Moodle courses of course dates. The caller commits."""

    def __init__(
        self,
        *,
        session: AsyncSession,
        moodle: MoodleClient,
        coursesales: CourseSalesApi,
        settings: CoursesSettings,
        catalogue: Catalogue | None = None,
    ) -> None:
        self.session = session
        self.moodle = moodle
        self.coursesales = coursesales
        self.settings = settings
        self.catalogue = catalogue or Catalogue(coursesales, settings)

    async def course_dates(self, wanted: dict[int, bool]) -> dict[int, CourseDateRow]:
        """The course dates (id -> refresh) as CourseSales last described them; one read for the stale or asked.

        A course date missing from CourseSales' answer keeps what we knew: that is not a cancellation.
        """
        rows = {
            row.id: row
            for row in (
                await self.session.execute(select(CourseDateRow).where(col(CourseDateRow.id).in_(list(wanted))))
            ).scalars()
        }
        stale = utcnow() - timedelta(seconds=self.settings.cache_seconds)
        need = {
            cdid for cdid, refresh in wanted.items() if refresh or cdid not in rows or rows[cdid].fetched_at < stale
        }
        if need:
            async for cd in self.coursesales.iter_course_dates():
                if cd.id in need:
                    # The rows kept were read above: a new one is added, flushed with the others at once.
                    rows[cd.id] = remembered(self.session, rows.get(cd.id), cd)
                    need.discard(cd.id)
                    if not need:
                        break
        return rows

    async def ensure_many(self, wanted: dict[int, bool]) -> dict[int, CourseResult | CourseProblem]:
        """Make the Moodle courses match the course dates (id -> refresh from CourseSales): one CourseSales read,
        Moodle read side by side, new courses made in one array call. A CourseProblem (a person must act) is
        answered per course date, not raised."""
        rows = await self.course_dates(wanted)
        links = await course_links(self.session, set(wanted))
        results = {cdid: _not_listed(cdid, links.get(cdid)) for cdid in wanted if cdid not in rows}
        known = [cdid for cdid in wanted if cdid in rows]
        if not known:
            return results
        mapping = await self.catalogue.mapping()
        # A course date without a link that would be made blank is made without a look-up: into a Moodle without
        # its course there is nothing to find. Moodle refuses a taken idnumber (a batch create is all or nothing;
        # the refused one is isolated), and only then is it looked up (see _create). Every other one is looked up
        # first: a template copy takes no idnumber, and a course date not to be made may have a course to update.
        unlinked = {cdid: self._plan(rows[cdid], mapping, None, None) for cdid in known if cdid not in links}
        blind = {cdid: plan for cdid, plan in unlinked.items() if plan.action == "create"}
        existing = await self._existing([cdid for cdid in known if cdid not in blind], links)
        creates: list[tuple[int, CoursePlan]] = []
        for cdid in known:
            cd, link = rows[cdid], links.get(cdid)
            plan = blind.get(cdid) or self._plan(cd, mapping, existing.get(cdid), link)
            if plan.action == "create":
                creates.append((cdid, plan))
            else:
                results[cdid] = await self._settle(cdid, cd, plan, link)
        results.update(await self._create(creates, rows, mapping))
        return results

    def _plan(
        self,
        cd: CourseDateRow,
        mapping: dict[int, CategoryMapping],
        existing: dict[str, Any] | None,
        link: CourseLink | None,
    ) -> CoursePlan:
        return plan_course(
            cd, mapping.get(cd.category_id or -1), existing, linked=link is not None, settings=self.settings
        )

    async def _settle(
        self, course_date_id: int, cd: CourseDateRow, plan: CoursePlan, link: CourseLink | None
    ) -> CourseResult | CourseProblem:
        """Carry out a plan other than "create" (those go together in one call)."""
        if plan.action == "skip":
            if eligibility(cd, self.settings) is None and self.settings.auto_create:
                return CourseProblem(plan.reason, cause="category.unmapped")
            return CourseResult(None, "skip", plan.reason)  # not due in Moodle: nothing to fix
        if plan.action == "none":
            return CourseResult(plan.moodle_course_id, plan.action, plan.reason)
        try:
            if plan.action == "duplicate":
                course_id = await self._make(plan)
            else:
                assert plan.moodle_course_id is not None  # an "update" or "adopt" plan has Moodle's course
                course_id = plan.moodle_course_id
                if plan.course:
                    await self._update(course_id, plan.course)
        except CourseProblem as exc:
            return exc
        self._link(course_date_id, course_id, link, created=plan.action == "duplicate")
        log.info("moodle.course." + plan.action, course_date_id=course_date_id, moodle_course_id=course_id)
        return CourseResult(course_id, plan.action, plan.reason)

    async def _create(
        self, creates: list[tuple[int, CoursePlan]], rows: dict[int, CourseDateRow], mapping: dict[int, CategoryMapping]
    ) -> dict[int, CourseResult | CourseProblem]:
        """New courses in all-or-nothing array calls; a refused one is isolated, then looked up by its idnumber
        (made before: by a run that stopped before its link was kept, or by hand) and settled as found, or
        explained."""
        if not creates:
            return {}
        answers = await self.moodle.create_courses([{**plan.course, "enablecompletion": 1} for _, plan in creates])
        results: dict[int, CourseResult | CourseProblem] = {}
        for (cdid, plan), res in zip(creates, answers, strict=True):
            if not res.ok:
                found = await self._course("idnumber", str(cdid)) if isinstance(res.error, MoodleConflict) else None
                if found is not None:
                    results[cdid] = await self._settle(
                        cdid, rows[cdid], self._plan(rows[cdid], mapping, found, None), None
                    )
                else:
                    results[cdid] = CourseProblem(await self._explain(res.error, plan.course))
                continue
            assert res.value is not None  # a made item carries Moodle's answer
            course_id = int(res.value["id"])
            self._link(cdid, course_id, None, created=True)
            log.info("moodle.course.create", course_date_id=cdid, moodle_course_id=course_id)
            results[cdid] = CourseResult(course_id, plan.action, plan.reason)
        return results

    async def _existing(self, course_dates: list[int], links: dict[int, CourseLink]) -> dict[int, dict[str, Any]]:
        """Moodle's course of each course date, read side by side: by its link, else by idnumber.

        A link whose course was deleted in Moodle is dropped (``links`` loses it) and the idnumber looked up afresh.
        """
        linked = [cdid for cdid in course_dates if cdid in links]
        found = dict(
            zip(
                linked,
                await asyncio.gather(*(self._course("id", links[c].moodle_course_id) for c in linked)),
                strict=True,
            )
        )
        lost = [cdid for cdid in linked if found[cdid] is None]
        for cdid in lost:
            await self.session.delete(links.pop(cdid))  # deleted in Moodle: look it up afresh
        if lost:
            await self.session.flush()
        unlinked = [cdid for cdid in course_dates if cdid not in links]
        found.update(
            zip(unlinked, await asyncio.gather(*(self._course("idnumber", str(c)) for c in unlinked)), strict=True)
        )
        return {cdid: course for cdid, course in found.items() if course is not None}

    async def _course(self, field: str, value: str | int) -> dict[str, Any] | None:
        found = await self.moodle.get_courses_by_field(field, value)
        return found[0] if found else None

    async def _make(self, plan: CoursePlan) -> int:
        """A copy of the plan's template course, with the course date's idnumber and dates set on it."""
        course = plan.course
        assert plan.template is not None  # a "duplicate" plan names its template
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

    async def _explain(self, error: MoodleError | None, course: dict[str, Any]) -> str:
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


def _not_listed(course_date_id: int, link: CourseLink | None) -> CourseResult | CourseProblem:
    """A course date CourseSales does not list (and never did, for us): keep its course, or say so."""
    if link is not None:
        return CourseResult(link.moodle_course_id, "none", "not in CourseSales' list: left as it is")
    return CourseProblem(f"course date {course_date_id} is not in CourseSales' list of Moodle course dates")
