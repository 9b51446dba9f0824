"""The reconcile's enrolment repair: who of a course date's learners Moodle lacks (enrolment removed or suspended by
hand, user deleted), and putting them back: the user made again, then enrolled again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.models import CourseDateRow, CourseLink, EnrolmentLink, Registration, UserLink
from app.db.tenancy import get_by_key
from app.db.types import utcnow
from app.sync.courses import course_times
from app.sync.gone import deleted_in_moodle, held
from app.sync.links import latest_contact, user_links
from app.sync.operations import audit
from app.sync.run_report import Phase

Learner = tuple[Registration, UserLink]


@dataclass
class CourseCheck:
    """One linked course date read against Moodle: its registrations checked, the learners to enrol again."""

    link: CourseLink
    checked: int
    missing: list[Learner]
    present: set[int]


class EnrolmentRepair(Phase):
    """Checks a course date's learners against Moodle's enrolments, and repairs what is missing."""

    async def check(self, link: CourseLink, now: int) -> CourseCheck | None:
        """Who of the course date's learners Moodle lacks (None: no one is registered)."""
        course_id = link.moodle_course_id
        async with self.sessions() as s:
            regs = list(
                (
                    await s.execute(
                        select(Registration)
                        .where(
                            col(Registration.course_date_id) == link.course_date_id,
                            col(Registration.status) == "registered",
                        )
                        .order_by(col(Registration.id))
                    )
                ).scalars()
            )
            if not regs:
                return None
            users_by_key = await user_links(s, {r.contact_key for r in regs})
            enrolments = await s.execute(
                select(
                    col(EnrolmentLink.moodle_user_id), col(EnrolmentLink.timestart), col(EnrolmentLink.timeend)
                ).where(col(EnrolmentLink.moodle_course_id) == course_id)
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
        return CourseCheck(link, len(regs), missing, await self._present(missing))

    async def _present(self, missing: list[Learner]) -> set[int]:
        """The missing learners' Moodle users that still exist (a deleted one is made again)."""
        if not missing:
            return set()
        found = {
            int(u["id"]): u for u in await self.moodle.get_users_by_field("id", [u.moodle_user_id for _, u in missing])
        }
        # A deleted user is still answered by id, renamed (recording 150): present only while it is the link's.
        return {u.moodle_user_id for _, u in missing if not deleted_in_moodle(found.get(u.moodle_user_id), u)}

    async def _enrolled(self, course_id: int, *, active_only: bool) -> list[dict[str, Any]]:
        options: list[dict[str, Any]] = [{"name": "userfields", "value": "id"}]
        if active_only:
            options.insert(0, {"name": "onlyactive", "value": 1})
        return list(
            await self.moodle.call("core_enrol_get_enrolled_users", {"courseid": course_id, "options": options}) or []
        )

    async def act(self, check: CourseCheck, *, dry_run: bool) -> None:
        """Plan the missing learners' repair; make it unless this is a dry run."""
        cdid, course_id = check.link.course_date_id, check.link.moodle_course_id
        for r, u in check.missing:
            if u.moodle_user_id not in check.present:
                self.report.add(
                    "user.recreate",
                    "the linked Moodle user was deleted",
                    username=u.username,
                    document=r.document_external_id,
                )
            self.report.add(
                "enrol",
                "enrolment missing or suspended in Moodle",
                course_date_id=cdid,
                moodle_course_id=course_id,
                username=u.username,
                document=r.document_external_id,
            )
        if not dry_run:
            await self._repair(cdid, course_id, check.missing, check.present)

    async def _repair(self, cdid: int, course_id: int, missing: list[Learner], present: set[int]) -> None:
        async with self.sessions() as s:
            stopped = await held(s, [k for r, u in missing for k in (r.contact_key, f"username:{u.username}")])
            kept: list[Learner] = []
            for r, u in missing:
                if {r.contact_key, f"username:{u.username}"} & stopped:
                    self.report.add("skip", "the contact is marked do not sync", username=u.username)
                    continue
                if u.moodle_user_id not in present and not await self._recreate(s, r, u):
                    continue
                kept.append((r, u))
            if kept:
                await self._enrol(s, cdid, course_id, kept)
            await s.commit()

    async def _enrol(self, s: AsyncSession, cdid: int, course_id: int, learners: list[Learner]) -> None:
        """Enrol the learners again, and bring our enrolment links in step with what Moodle now has."""
        row = await get_by_key(s, CourseDateRow, cdid)
        start, end = (
            course_times(row, self.settings.courses) if row and self.settings.enrolments.use_course_dates else (0, 0)
        )
        items = [
            {
                "roleid": self.settings.enrolments.role_id,
                "userid": u.moodle_user_id,
                "courseid": course_id,
                **({"timestart": start, "timeend": end} if start else {}),
            }
            for _, u in learners
        ]
        results = await self.moodle.enrol_users(items)
        for (r, u), item, res in zip(learners, items, results, strict=True):
            if not res.ok:
                self.report.failed(f"Moodle refused the enrolment: {res.error}", document=r.document_external_id)
                continue
            link = (
                await s.execute(
                    select(EnrolmentLink).where(
                        col(EnrolmentLink.moodle_user_id) == u.moodle_user_id,
                        col(EnrolmentLink.moodle_course_id) == course_id,
                    )
                )
            ).scalar_one_or_none()
            if link is None:
                link = EnrolmentLink(moodle_user_id=u.moodle_user_id, moodle_course_id=course_id, course_date_id=cdid)
                s.add(link)
            link.status, link.role_id = "active", item["roleid"]
            link.timestart, link.timeend = item.get("timestart", 0), item.get("timeend", 0)
            link.document_external_id = r.document_external_id
            link.updated_at = utcnow()
            self.report.counts["enrolments_repaired"] += 1

    async def _recreate(self, s: AsyncSession, reg: Registration, link: UserLink) -> bool:
        """Make a user deleted in Moodle again (no stored password: Moodle's createpassword makes one and emails the
        learner); False when it could not be."""
        contact = await latest_contact(s, reg.contact_key)
        if contact is None:
            self.report.failed("cannot re-create the user: no contact data kept", username=link.username)
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
            self.report.failed(f"Moodle refused to re-create the user: {res.error}", username=link.username)
            return False
        db_link = await s.get_one(UserLink, link.id)
        old = db_link.moodle_user_id
        assert res.value is not None  # a made item carries Moodle's answer
        db_link.moodle_user_id = int(res.value["id"])
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
