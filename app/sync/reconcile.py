"""The reconcile: compare CourseSales, our links and Moodle; plan only what differs; act unless it is a dry run.

It streams CourseSales course dates page by page (memory stays flat), reads Moodle in array calls, and
repairs what webhooks missed: courses to make or bring in step, enrolments removed or suspended by hand,
linked users deleted in Moodle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import desc, select

from app.db import inbox
from app.db.engine import SessionFactory
from app.db.models import Completion, CourseDateRow, CourseLink, EnrolmentLink, Event, Registration, UserLink
from app.db.types import utcnow
from app.moodle.client import MoodleClient
from app.settings import Settings
from app.sync.course_sync import Catalogue, remember_course_date
from app.sync.courses import course_times, eligibility, plan_course

log = structlog.get_logger(__name__)
Progress = Callable[[dict[str, Any]], Awaitable[None]]
PAGE = 200


class Stop(Exception):
    """A guard tripped: the run stops and alerts instead of acting."""


@dataclass
class Report:
    status: str = "done"
    plan: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error: str | None = None


class Reconciler:
    """One run; ``dry_run`` plans and changes nothing in Moodle or CourseSales."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        moodle: MoodleClient,
        coursesales: Any,
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
        except Stop as exc:
            self.report.status, self.report.error = "stopped", str(exc)
        await self._tick(self.report.status)
        return self.report

    def _plan(self, action: str, reason: str, **target: Any) -> None:
        self.report.plan.append({"action": action, "reason": reason, **target})
        self.report.counts[f"plan.{action}"] += 1

    async def _tick(self, phase: str, **kw: Any) -> None:
        if self.progress is not None:
            await self.progress({"phase": phase, **kw, "counts": dict(self.report.counts)})

    # -- courses ---------------------------------------------------------------------------

    async def _courses(self, *, dry_run: bool) -> None:
        courses = self.settings.courses
        mapping = await Catalogue(self.coursesales, courses).mapping()
        async with self.sessions() as s:
            links = {link.course_date_id: link for link in (await s.execute(select(CourseLink))).scalars()}
        moodle_by_id = await self._moodle_courses([link.moodle_course_id for link in links.values()])
        seen = 0
        async with self.sessions() as s:
            async for cd in self.coursesales.iter_course_dates():
                seen += 1
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
                        await inbox.request_internal(
                            s, kind="course.sync", subject=f"course_date:{cd.id}", payload={"course_date_id": cd.id}
                        )
                if seen % PAGE == 0:
                    await s.commit()
                    await self._tick("courses", seen=seen)
            if seen == 0 and links:
                raise Stop(f"CourseSales returned no course dates while {len(links)} are linked: nothing was changed")
            await s.commit()
        self.report.counts["course_dates_seen"] = seen
        await self._tick("courses", seen=seen)

    async def _moodle_courses(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for i in range(0, len(ids), 100):
            chunk = ids[i : i + 100]
            for c in await self.moodle.get_courses_by_field("ids", ",".join(map(str, chunk))):
                out[int(c["id"])] = c
        return out

    # -- enrolments ------------------------------------------------------------------------

    async def _enrolments(self, *, dry_run: bool) -> None:
        async with self.sessions() as s:
            links = {link.course_date_id: link for link in (await s.execute(select(CourseLink))).scalars()}
            regs = list((await s.execute(select(Registration).where(Registration.status == "registered"))).scalars())
            users_by_key = await self._user_links(s)
        by_course: dict[int, list[Registration]] = defaultdict(list)
        for r in regs:
            if r.course_date_id in links:
                by_course[r.course_date_id].append(r)
        now = int(utcnow().timestamp())
        for cdid, course_regs in sorted(by_course.items()):
            course_id = links[cdid].moodle_course_id
            everyone = {int(u["id"]) for u in await self._enrolled(course_id, active_only=False)}
            active = {int(u["id"]) for u in await self._enrolled(course_id, active_only=True)}
            async with self.sessions() as s:
                windows = {
                    e.moodle_user_id: (e.timestart, e.timeend)
                    for e in (
                        await s.execute(select(EnrolmentLink).where(EnrolmentLink.moodle_course_id == course_id))
                    ).scalars()
                }
            missing: list[tuple[Registration, UserLink]] = []
            for r in course_regs:
                u = users_by_key.get(r.contact_key)
                if u is None:
                    continue
                start, end = windows.get(u.moodle_user_id, (0, 0))
                # Moodle counts an enrolment outside its dates as not active: only then can we not tell it apart.
                in_window = start <= now and (not end or now <= end)
                if u.moodle_user_id not in everyone or (u.moodle_user_id not in active and in_window):
                    missing.append((r, u))
            self.report.counts["enrolments_checked"] += len(course_regs)
            if not missing:
                continue
            present = {
                int(u["id"]) for u in await self.moodle.get_users_by_field("id", [u.moodle_user_id for _, u in missing])
            }
            for r, u in missing:
                if u.moodle_user_id not in present:
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
                await self._repair(cdid, course_id, missing, present)
            await self._tick("enrolments", course_date_id=cdid)

    async def _completions(self, *, dry_run: bool) -> None:
        """Pull completions no webhook reported (local_webhooks sends once and never retries)."""
        if not self.settings.completion.process_step_id:
            return
        today = utcnow().date()
        oldest = today - timedelta(days=self.settings.completion.pull_window_days)
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
                        Registration.status == "registered",
                        Completion.id.is_(None),
                        CourseDateRow.start <= today,
                        (CourseDateRow.end.is_(None)) | (CourseDateRow.end >= oldest),
                    )
                )
            ).all()
            users = await self._user_links(s)
        by_user: dict[int, list[tuple[Registration, int]]] = defaultdict(list)
        for reg, course_id in rows:
            link = users.get(reg.contact_key)
            if link is not None:
                by_user[link.moodle_user_id].append((reg, course_id))
        for user_id, wanted in sorted(by_user.items()):
            self.report.counts["moodle_calls.completion_pull"] += 1
            completed = {int(c["id"]) for c in await self.moodle.users_courses(user_id) if c.get("completed")}
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
                        await inbox.request_internal(
                            s,
                            kind="completion.pull",
                            subject=f"completion:{reg.contact_key}:{reg.course_date_id}",
                            payload={"relateduserid": user_id, "courseid": course_id},
                        )
                        await s.commit()
        await self._tick("completions", users=len(by_user))

    async def _enrolled(self, course_id: int, *, active_only: bool) -> list[dict[str, Any]]:
        options: list[dict[str, Any]] = [{"name": "userfields", "value": "id"}]
        if active_only:
            options.insert(0, {"name": "onlyactive", "value": 1})
        return list(
            await self.moodle.call("core_enrol_get_enrolled_users", {"courseid": course_id, "options": options}) or []
        )

    async def _user_links(self, s: Any) -> dict[str, UserLink]:
        out: dict[str, UserLink] = {}
        for link in (await s.execute(select(UserLink))).scalars():
            out[link.contact_key] = link
            out[f"username:{link.username}"] = link
        return out

    async def _repair(
        self, cdid: int, course_id: int, missing: list[tuple[Registration, Any]], present: set[int]
    ) -> None:
        async with self.sessions() as s:
            for r, u in missing:
                if u.moodle_user_id not in present:
                    await self._recreate(s, r, u)
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
                    self._plan("error", f"Moodle refused the enrolment: {res.error}", document=r.document_external_id)
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

    async def _recreate(self, s: Any, reg: Registration, link: UserLink) -> None:
        """No stored password: Moodle's createpassword makes one and emails the learner."""
        contact = await latest_contact(s, reg.contact_key)
        if contact is None:
            self._plan("error", "cannot re-create the user: no contact data kept", username=link.username)
            return
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
            self._plan("error", f"Moodle refused to re-create the user: {res.error}", username=link.username)
            return
        db_link = await s.get(UserLink, link.id)
        db_link.moodle_user_id = int(res.value["id"])  # type: ignore[index]
        db_link.password_digest = None
        link.moodle_user_id = db_link.moodle_user_id
        await s.flush()
        self.report.counts["users_recreated"] += 1


async def latest_contact(s: Any, contact_key: str) -> dict[str, Any] | None:
    """The newest contact data an event brought for this contact (passwords are never kept)."""
    rows = await s.execute(
        select(Event.payload)
        .where(Event.subject == contact_key, Event.kind.in_(["contact.upserted", "registration.registered"]))
        .order_by(desc(Event.id))
        .limit(1)
    )
    payload = rows.scalar_one_or_none()
    if not payload:
        return None
    return payload.get("contact") or payload.get("registration", {}).get("contact")
