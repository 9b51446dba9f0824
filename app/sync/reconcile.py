"""The reconcile: compare CourseSales, our links and Moodle; plan only what differs; act unless it is a dry run.

It streams: CourseSales course dates page by page, our course links and user links in keyset pages, and
registrations one course date (or one page of learners) at a time, so memory stays flat however many there are.
It reads Moodle in array calls, a few courses at a time, and repairs what webhooks missed: courses to make or bring
in step, enrolments removed or suspended by hand, linked users deleted in Moodle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.coursesales.api import CourseSalesApi
from app.coursesales.schemas import CourseDate
from app.db.engine import SessionFactory
from app.db.models import Completion, CourseDateRow, CourseLink, EnrolmentLink, Registration, UserLink
from app.db.types import utcnow
from app.moodle.client import MoodleClient
from app.notify.alerts import raise_alert
from app.settings import Settings
from app.sync.adoption import AccountPlan
from app.sync.course_sync import Catalogue, remember_course_date
from app.sync.courses import CategoryMapping, course_times, eligibility, plan_course
from app.sync.gone import deleted_in_moodle, held
from app.sync.intake import add_request, completion_request, course_request
from app.sync.links import latest_contact, user_links
from app.sync.operations import audit
from app.sync.paging import bounded, chunks, keyset_pages

log = structlog.get_logger(__name__)
Progress = Callable[[dict[str, Any]], Awaitable[None]]
PAGE = 200
USERS_PAGE = 1000  # learners per completion pull query


class Stop(Exception):
    """A guard tripped: the run stops and alerts instead of acting."""


@dataclass
class Report:
    status: str = "done"
    plan: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error: str | None = None


@dataclass
class CourseCheck:
    """One linked course date read against Moodle: its registrations checked, the learners to enrol again."""

    link: CourseLink
    checked: int
    missing: list[tuple[Registration, UserLink]]
    present: set[int]


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

    def _plan(self, action: str, reason: str, **target: Any) -> None:
        self.report.plan.append({"action": action, "reason": reason, **target})
        self.report.counts[f"plan.{action}"] += 1

    async def _tick(self, phase: str, **kw: Any) -> None:
        if self.progress is not None:
            await self.progress({"phase": phase, **kw, "counts": dict(self.report.counts)})

    async def _accounts(self) -> None:
        """Dry runs only: what the contacts waiting for a Moodle user would find (the check before a migration from
        the CourseSales plugins, whose students' accounts exist unlinked). The events themselves do the work."""
        await self._tick("accounts")
        plan = AccountPlan(sessions=self.sessions, moodle=self.moodle, rules=self.settings.users)
        async for entry in plan.entries():
            self._plan(entry.pop("action"), entry.pop("reason"), **entry)

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
        links = {
            link.course_date_id: link
            for link in (await s.execute(select(CourseLink).where(CourseLink.course_date_id.in_(ids)))).scalars()
        }
        moodle_by_id = await self._moodle_courses([link.moodle_course_id for link in links.values()])
        # Held for the page: remember_course_date then finds each row in the session, not by a query of its own.
        _rows = (await s.execute(select(CourseDateRow).where(CourseDateRow.id.in_(ids)))).scalars().all()
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
                self._plan("report", plan.reason, course_date_id=cd.id)
            elif plan.action != "none":
                self._plan(
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

    # -- enrolments ------------------------------------------------------------------------

    async def _enrolments(self, *, dry_run: bool) -> None:
        """Course date by course date, a few read at once; acted on one at a time, in course date order."""
        now = int(utcnow().timestamp())
        limit = self.settings.moodle.max_in_flight
        async for links in keyset_pages(self.sessions, CourseLink.course_date_id, PAGE):
            checks = await bounded([partial(self._check_course, link, now) for link in links], limit)
            recreated = self.report.counts.get("users_recreated", 0)
            for link, check in zip(links, checks, strict=True):
                if self.report.counts.get("users_recreated", 0) != recreated:
                    check = await self._check_course(link, now)  # read before a learner was re-created: again
                if check is not None:
                    await self._act(check, dry_run=dry_run)

    async def _check_course(self, link: CourseLink, now: int) -> CourseCheck | None:
        """Who of the course date's learners Moodle lacks (None: no one is registered)."""
        course_id = link.moodle_course_id
        async with self.sessions() as s:
            regs = list(
                (
                    await s.execute(
                        select(Registration)
                        .where(Registration.course_date_id == link.course_date_id, Registration.status == "registered")
                        .order_by(Registration.id)
                    )
                ).scalars()
            )
            if not regs:
                return None
            users_by_key = await user_links(s, {r.contact_key for r in regs})
            enrolments = await s.execute(
                select(EnrolmentLink.moodle_user_id, EnrolmentLink.timestart, EnrolmentLink.timeend).where(
                    EnrolmentLink.moodle_course_id == course_id
                )
            )
            windows = {user_id: (start, end) for user_id, start, end in enrolments}
        everyone = {int(u["id"]) for u in await self._enrolled(course_id, active_only=False)}
        learners = [(r, u) for r in regs if (u := users_by_key.get(r.contact_key)) is not None]
        # Moodle counts an enrolment outside its dates as not active: only inside them can a suspension be told
        # apart, so Moodle's active list is asked for only when someone enrolled is inside their dates.
        in_window = {
            u.moodle_user_id
            for _, u in learners
            if u.moodle_user_id in everyone and _inside(windows.get(u.moodle_user_id, (0, 0)), now)
        }
        active = {int(u["id"]) for u in await self._enrolled(course_id, active_only=True)} if in_window else set()
        missing = [
            (r, u)
            for r, u in learners
            if u.moodle_user_id not in everyone or (u.moodle_user_id in in_window and u.moodle_user_id not in active)
        ]
        present: set[int] = set()
        if missing:
            found = {
                int(u["id"]): u
                for u in await self.moodle.get_users_by_field("id", [u.moodle_user_id for _, u in missing])
            }
            # A deleted user is still answered by id, renamed (recording 150): present only while it is the link's.
            present = {u.moodle_user_id for _, u in missing if not deleted_in_moodle(found.get(u.moodle_user_id), u)}
        return CourseCheck(link, len(regs), missing, present)

    async def _act(self, check: CourseCheck, *, dry_run: bool) -> None:
        cdid, course_id = check.link.course_date_id, check.link.moodle_course_id
        self.report.counts["enrolments_checked"] += check.checked
        if not check.missing:
            return
        for r, u in check.missing:
            if u.moodle_user_id not in check.present:
                self._plan(
                    "user.recreate",
                    "the linked Moodle user was deleted",
                    username=u.username,
                    document=r.document_external_id,
                )
            self._plan(
                "enrol",
                "enrolment missing or suspended in Moodle",
                course_date_id=cdid,
                moodle_course_id=course_id,
                username=u.username,
                document=r.document_external_id,
            )
        if not dry_run:
            await self._repair(cdid, course_id, check.missing, check.present)
        await self._tick("enrolments", course_date_id=cdid)

    # -- completions -----------------------------------------------------------------------

    async def _completions(self, *, dry_run: bool) -> None:
        """Pull completions no webhook reported (local_webhooks sends once and never retries)."""
        if not self.settings.completion.process_step_id:
            return
        users = 0
        async for page in keyset_pages(self.sessions, UserLink.moodle_user_id, USERS_PAGE):
            wanted = await self._pull_candidates(page)
            pulled = [link.moodle_user_id for link in page if link.moodle_user_id in wanted]
            answers = await bounded(
                [partial(self.moodle.users_courses, user_id) for user_id in pulled], self.settings.moodle.max_in_flight
            )
            for user_id, courses in zip(pulled, answers, strict=True):
                self.report.counts["moodle_calls.completion_pull"] += 1
                completed = {int(c["id"]) for c in courses if c.get("completed")}
                await self._pull(user_id, wanted[user_id], completed, dry_run=dry_run)
            users += len(pulled)
        await self._tick("completions", users=users)

    async def _pull_candidates(self, page: list[UserLink]) -> dict[int, list[tuple[Registration, int]]]:
        """{Moodle user id: [(registration, Moodle course id)]} of a page of learners: registrations of course dates
        running or recently ended with no completion recorded yet."""
        today = utcnow().date()
        oldest = today - timedelta(days=self.settings.completion.pull_window_days)
        by_key = {key: link for link in page for key in (link.contact_key, f"username:{link.username}")}
        async with self.sessions() as s:
            rows = (
                await s.execute(
                    select(Registration, CourseLink.moodle_course_id)
                    .join(CourseLink, CourseLink.course_date_id == Registration.course_date_id)
                    .join(CourseDateRow, CourseDateRow.id == Registration.course_date_id)
                    .outerjoin(
                        Completion,
                        (Completion.contact_key == Registration.contact_key)
                        & (Completion.course_date_id == Registration.course_date_id),
                    )
                    .where(
                        Registration.contact_key.in_(by_key),
                        Registration.status == "registered",
                        Completion.id.is_(None),
                        CourseDateRow.start <= today,
                        (CourseDateRow.end.is_(None)) | (CourseDateRow.end >= oldest),
                    )
                    .order_by(Registration.id)
                )
            ).all()
        out: dict[int, list[tuple[Registration, int]]] = defaultdict(list)
        for reg, course_id in rows:
            out[by_key[reg.contact_key].moodle_user_id].append((reg, course_id))
        return out

    async def _pull(
        self, user_id: int, wanted: list[tuple[Registration, int]], completed: set[int], *, dry_run: bool
    ) -> None:
        for reg, course_id in wanted:
            if course_id not in completed:
                continue
            self._plan(
                "completion",
                "completed in Moodle, no step run yet",
                document=reg.document_external_id,
                course_date_id=reg.course_date_id,
            )
            if not dry_run:
                async with self.sessions() as s:
                    await add_request(
                        s,
                        completion_request(
                            contact_key=reg.contact_key,
                            course_date_id=reg.course_date_id,
                            user_id=user_id,
                            course_id=course_id,
                        ),
                    )
                    await s.commit()

    async def _enrolled(self, course_id: int, *, active_only: bool) -> list[dict[str, Any]]:
        options: list[dict[str, Any]] = [{"name": "userfields", "value": "id"}]
        if active_only:
            options.insert(0, {"name": "onlyactive", "value": 1})
        return list(
            await self.moodle.call("core_enrol_get_enrolled_users", {"courseid": course_id, "options": options}) or []
        )

    async def _repair(
        self, cdid: int, course_id: int, missing: list[tuple[Registration, Any]], present: set[int]
    ) -> None:
        async with self.sessions() as s:
            stopped = await held(s, [k for r, u in missing for k in (r.contact_key, f"username:{u.username}")])
            kept = []
            for r, u in missing:
                if {r.contact_key, f"username:{u.username}"} & stopped:
                    self._plan("skip", "the contact is marked do not sync", username=u.username)
                    continue
                if u.moodle_user_id not in present and not await self._recreate(s, r, u):
                    continue
                kept.append((r, u))
            missing = kept
            if not missing:
                await s.commit()
                return
            row = await s.get(CourseDateRow, cdid)
            start, end = (
                course_times(row, self.settings.courses)
                if row and self.settings.enrolments.use_course_dates
                else (0, 0)
            )
            items = [
                {
                    "roleid": self.settings.enrolments.role_id,
                    "userid": u.moodle_user_id,
                    "courseid": course_id,
                    **({"timestart": start, "timeend": end} if start else {}),
                }
                for _, u in missing
            ]
            results = await self.moodle.enrol_users(items)
            for (r, u), item, res in zip(missing, items, results, strict=True):
                if not res.ok:
                    self._failed(f"Moodle refused the enrolment: {res.error}", document=r.document_external_id)
                    continue
                link = (
                    await s.execute(
                        select(EnrolmentLink).where(
                            EnrolmentLink.moodle_user_id == u.moodle_user_id,
                            EnrolmentLink.moodle_course_id == course_id,
                        )
                    )
                ).scalar_one_or_none()
                if link is None:
                    link = EnrolmentLink(
                        moodle_user_id=u.moodle_user_id, moodle_course_id=course_id, course_date_id=cdid
                    )
                    s.add(link)
                link.status, link.role_id = "active", item["roleid"]
                link.timestart, link.timeend = item.get("timestart", 0), item.get("timeend", 0)
                link.document_external_id = r.document_external_id
                link.updated_at = utcnow()
                self.report.counts["enrolments_repaired"] += 1
            await s.commit()

    def _failed(self, reason: str, **target: Any) -> None:
        """A repair Moodle refused: in the plan, in the run's counts, and in the log above info (an alert follows)."""
        self._plan("error", reason, **target)
        self.report.counts["failed"] += 1
        log.warning("reconcile.repair_failed", reason=reason, **target)

    async def _recreate(self, s: Any, reg: Registration, link: UserLink) -> bool:
        """Make a user deleted in Moodle again (no stored password: Moodle's createpassword makes one and emails the
        learner); False when it could not be."""
        contact = await latest_contact(s, reg.contact_key)
        if contact is None:
            self._failed("cannot re-create the user: no contact data kept", username=link.username)
            return False
        user = {
            "username": link.username,
            "createpassword": 1,
            "auth": self.settings.users.auth,
            "firstname": contact["firstname"],
            "lastname": contact["lastname"],
            "email": contact["email"],
        }
        (res,) = await self.moodle.create_users([user])
        if not res.ok:
            self._failed(f"Moodle refused to re-create the user: {res.error}", username=link.username)
            return False
        db_link = await s.get(UserLink, link.id)
        old = db_link.moodle_user_id
        db_link.moodle_user_id = int(res.value["id"])  # type: ignore[index]
        db_link.password_digest = None
        link.moodle_user_id = db_link.moodle_user_id
        audit(s, actor="reconcile", action="user.recreated", target=f"moodle_user:{db_link.moodle_user_id}",
              note=f"Moodle user {old} of contact {reg.contact_key} was deleted in Moodle: made again")  # fmt: skip
        self.report.counts["users_recreated"] += 1
        await s.flush()
        return True


def _inside(window: tuple[int, int], now: int) -> bool:
    start, end = window
    return start <= now and (not end or now <= end)
