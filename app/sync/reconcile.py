"""The reconcile: compare CourseSales, our links and Moodle; plan only what differs; act unless it is a dry run.

It streams: CourseSales course dates page by page, our course links and user links in keyset pages, and
registrations one course date (or one page of learners) at a time, so memory stays flat however many there are.
It reads Moodle in array calls, a few courses at a time, and repairs what webhooks missed: courses to make or bring
in step here, enrolments removed or suspended by hand and linked users deleted in Moodle (app.sync.enrolment_repair),
completions never reported (app.sync.completion_pull).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.coursesales.api import CourseSalesApi
from app.coursesales.schemas import CourseDate
from app.db.engine import SessionFactory
from app.db.models import CourseDateRow, CourseLink, UserLink
from app.db.types import utcnow
from app.moodle.client import MoodleClient
from app.notify.alerts import raise_alert
from app.settings import Settings
from app.sync.adoption import AccountPlan
from app.sync.completion_pull import CompletionPull
from app.sync.course_dates import Catalogue, remember_course_date
from app.sync.courses import CategoryMapping, eligibility, plan_course
from app.sync.enrolment_repair import EnrolmentRepair
from app.sync.intake import add_request, course_request
from app.sync.links import course_links
from app.sync.paging import bounded, chunks, keyset_pages
from app.sync.run_report import Report, Stop

Progress = Callable[[dict[str, Any]], Awaitable[None]]
PAGE = 200
USERS_PAGE = 1000  # learners per completion pull query


class Reconciler:
    """One run; ``dry_run`` plans and changes nothing in Moodle or CourseSales."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        moodle: MoodleClient,
        coursesales: CourseSalesApi,
        settings: Settings,
        progress: Progress | None = None,
    ) -> None:
        self.sessions = sessions
        self.moodle = moodle
        self.coursesales = coursesales
        self.settings = settings
        self.progress = progress
        self.report = Report()
        self.repair = EnrolmentRepair(sessions=sessions, moodle=moodle, settings=settings, report=self.report)
        self.pull = CompletionPull(sessions=sessions, moodle=moodle, settings=settings, report=self.report)

    async def run(self, *, dry_run: bool) -> Report:
        try:
            await self._courses(dry_run=dry_run)
            await self._enrolments(dry_run=dry_run)
            await self._completions(dry_run=dry_run)
            if dry_run:
                await self._accounts()
        except Stop as exc:
            self.report.status, self.report.error = "stopped", str(exc)
        failed = self.report.counts.get("failed", 0)
        if failed and not dry_run:
            async with self.sessions() as s:
                await raise_alert(
                    s, cause="reconcile.repairs_failed",
                    message=f"the reconcile could not make {failed} repair(s) Moodle refused: see the run's plan",
                    fix="open the run (GET /api/runs/<id>): each failed repair says what Moodle answered",
                )  # fmt: skip
                await s.commit()
        await self._tick(self.report.status)
        return self.report

    async def _tick(self, phase: str, **kw: Any) -> None:
        if self.progress is not None:
            await self.progress({"phase": phase, **kw, "counts": dict(self.report.counts)})

    async def _accounts(self) -> None:
        """Dry runs only: what the contacts waiting for a Moodle user would find (the check before a migration from
        the CourseSales plugins, whose students' accounts exist unlinked). The events themselves do the work."""
        await self._tick("accounts")
        plan = AccountPlan(sessions=self.sessions, moodle=self.moodle, rules=self.settings.users)
        async for entry in plan.entries():
            self.report.add(entry.pop("action"), entry.pop("reason"), **entry)

    # -- courses ---------------------------------------------------------------------------

    async def _courses(self, *, dry_run: bool) -> None:
        mapping = await Catalogue(self.coursesales, self.settings.courses).mapping()
        seen = 0
        async with self.sessions() as s:
            async for page in chunks(self.coursesales.iter_course_dates(), PAGE):
                await self._course_page(s, page, mapping, dry_run=dry_run)
                seen += len(page)
                await s.commit()
                await self._tick("courses", seen=seen)
            if seen == 0 and (linked := await s.scalar(select(func.count()).select_from(CourseLink))):
                raise Stop(f"CourseSales returned no course dates while {linked} are linked: nothing was changed")
        self.report.counts["course_dates_seen"] = seen
        await self._tick("courses", seen=seen)

    async def _course_page(
        self, s: AsyncSession, page: list[CourseDate], mapping: dict[int, CategoryMapping], *, dry_run: bool
    ) -> None:
        courses = self.settings.courses
        ids = [cd.id for cd in page]
        links = await course_links(s, ids)
        moodle_by_id = await self._moodle_courses([link.moodle_course_id for link in links.values()])
        # Held for the page: remember_course_date then finds each row in the session, not by a query of its own.
        _rows = (await s.execute(select(CourseDateRow).where(col(CourseDateRow.id).in_(ids)))).scalars().all()
        for cd in page:
            await remember_course_date(s, cd)
            link = links.get(cd.id)
            if link is None and eligibility(cd, courses) is not None:
                continue  # neither ours nor due in Moodle
            existing = moodle_by_id.get(link.moodle_course_id) if link else None
            if existing is None:
                found = await self.moodle.get_courses_by_field("idnumber", str(cd.id))
                existing = found[0] if found else None
            plan = plan_course(
                cd,
                mapping.get(cd.category_id or -1),
                existing,
                linked=link is not None and existing is not None,
                settings=courses,
            )
            if plan.action == "skip":
                self.report.add("report", plan.reason, course_date_id=cd.id)
            elif plan.action != "none":
                self.report.add(
                    f"course.{plan.action}",
                    plan.reason or "differs from CourseSales",
                    course_date_id=cd.id,
                    changes=plan.course,
                )
                if not dry_run:
                    await add_request(s, course_request(cd.id))

    async def _moodle_courses(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for i in range(0, len(ids), 100):
            chunk = ids[i : i + 100]
            for c in await self.moodle.get_courses_by_field("ids", ",".join(map(str, chunk))):
                out[int(c["id"])] = c
        return out

    # -- enrolments and completions --------------------------------------------------------

    async def _enrolments(self, *, dry_run: bool) -> None:
        """Course date by course date, a few read at once; acted on one at a time, in course date order."""
        now = int(utcnow().timestamp())
        limit = self.settings.moodle.max_in_flight
        async for links in keyset_pages(self.sessions, CourseLink, "course_date_id", PAGE):
            checks = await bounded([partial(self.repair.check, link, now) for link in links], limit)
            recreated = self.report.counts.get("users_recreated", 0)
            for link, check in zip(links, checks, strict=True):
                if self.report.counts.get("users_recreated", 0) != recreated:
                    check = await self.repair.check(link, now)  # read before a learner was re-created: again
                if check is None:
                    continue
                self.report.counts["enrolments_checked"] += check.checked
                if check.missing:
                    await self.repair.act(check, dry_run=dry_run)
                    await self._tick("enrolments", course_date_id=link.course_date_id)

    async def _completions(self, *, dry_run: bool) -> None:
        """Pull completions no webhook reported, a page of learners at a time."""
        if not self.settings.completion.process_step_id:
            return
        users = 0
        async for page in keyset_pages(self.sessions, UserLink, "moodle_user_id", USERS_PAGE):
            users += await self.pull.page(page, dry_run=dry_run)
        await self._tick("completions", users=users)
