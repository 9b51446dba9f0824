"""The reconcile's completion pull: completions no webhook reported (local_webhooks sends once and never retries),
found by asking Moodle about each learner with a registration still open to one."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from functools import partial

from sqlalchemy import select
from sqlmodel import col

from app.db.models import Completion, CourseDateRow, CourseLink, Registration, UserLink
from app.db.types import utcnow
from app.sync.intake import add_request, completion_request
from app.sync.paging import bounded
from app.sync.run_report import Phase

# {Moodle user id: [(registration, Moodle course id)]}
Wanted = dict[int, list[tuple[Registration, int]]]


class CompletionPull(Phase):
    """Asks Moodle for the completions of a page of learners at a time; each found asks for its process step."""

    async def page(self, links: list[UserLink], *, dry_run: bool) -> int:
        """Pull the completions of one page of linked learners; how many learners Moodle was asked about."""
        wanted = await self._candidates(links)
        pulled = [link.moodle_user_id for link in links if link.moodle_user_id in wanted]
        answers = await bounded(
            [partial(self.moodle.users_courses, user_id) for user_id in pulled], self.settings.moodle.max_in_flight
        )
        for user_id, courses in zip(pulled, answers, strict=True):
            self.report.counts["moodle_calls.completion_pull"] += 1
            completed = {int(c["id"]) for c in courses if c.get("completed")}
            await self._pull(user_id, wanted[user_id], completed, dry_run=dry_run)
        return len(pulled)

    async def _candidates(self, links: list[UserLink]) -> Wanted:
        """The registrations of these learners for course dates running or recently ended with no completion
        recorded yet, by Moodle user id."""
        today = utcnow().date()
        oldest = today - timedelta(days=self.settings.completion.pull_window_days)
        by_key = {key: link for link in links for key in (link.contact_key, f"username:{link.username}")}
        async with self.sessions() as s:
            rows = (
                await s.execute(
                    select(Registration, col(CourseLink.moodle_course_id))
                    .join(CourseLink, col(CourseLink.course_date_id) == col(Registration.course_date_id))
                    .join(CourseDateRow, col(CourseDateRow.id) == col(Registration.course_date_id))
                    .outerjoin(
                        Completion,
                        (col(Completion.contact_key) == col(Registration.contact_key))
                        & (col(Completion.course_date_id) == col(Registration.course_date_id)),
                    )
                    .where(
                        col(Registration.contact_key).in_(by_key),
                        col(Registration.status) == "registered",
                        col(Completion.id).is_(None),
                        col(CourseDateRow.start) <= today,
                        (col(CourseDateRow.end).is_(None)) | (col(CourseDateRow.end) >= oldest),
                    )
                    .order_by(col(Registration.id))
                )
            ).all()
        out: Wanted = defaultdict(list)
        for reg, course_id in rows:
            out[by_key[reg.contact_key].moodle_user_id].append((reg, course_id))
        return out

    async def _pull(
        self, user_id: int, wanted: list[tuple[Registration, int]], completed: set[int], *, dry_run: bool
    ) -> None:
        for reg, course_id in wanted:
            if course_id not in completed:
                continue
            self.report.add(
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
