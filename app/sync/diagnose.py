"""Why can this student not see this course? The whole chain walked live, each link passed or failed with its reason,
and the one next step to take (issue 19). The API, the CLI and the console only show a Walk.

The chain, in order (the first link that does not pass names the next step):

- CourseSales: the contact known to us, active, with a password (as CourseSales last sent it: there is no read of
  one contact); the Document registered; the course date listed, scheduled and public (read now); its course master
  public and its category mapped to a Moodle category (read now).
- Our side: "do not sync"; the events about them, their outcomes and what they wait for; an adoption refused; the
  user, course and enrolment links.
- Moodle (read now): the user (not deleted, not suspended, its auth); the course (visible); the enrolment (there,
  inside its dates, active); the learner's completion. Without a contact: the enrolments we expect against Moodle's.

Read-only and bounded: our tables are read first in one session; then at most three CourseSales reads and five
Moodle reads (app.sync.diagnose_reads), each under a timeout; an upstream that does not answer leaves its links
"could not check" (``ok`` None) and the rest still show. Every text is masked of the service's secrets.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime

from app.coursesales.api import CourseSalesApi
from app.db.engine import SessionFactory
from app.db.types import utcnow
from app.moodle.client import MoodleClient
from app.settings import Settings
from app.settings_report import mask_text
from app.sync import diagnose_links as cs_links
from app.sync.diagnose_model import CALL_TIMEOUT, BadQuery, Link, Query, Reader
from app.sync.diagnose_moodle import moodle_links
from app.sync.diagnose_reads import read_coursesales, read_moodle
from app.sync.diagnose_records import Records, load
from app.sync.readiness import COURSESALES_MISSING, MOODLE_MISSING

__all__ = ["CALL_TIMEOUT", "BadQuery", "Link", "Query", "Walk", "walk"]


@dataclass(frozen=True)
class Walk:
    """The chain for one question: its links in order, and the one next step."""

    links: list[Link]
    next_step: str
    contact: str | None  # the contact key the question resolved to (contact:1234), if one was asked about
    course_date: int | None
    document: str | None
    reads: int = 0  # upstream reads made (CourseSales and Moodle together)

    @property
    def ok(self) -> bool:
        """Every link passed: none failed, none left unchecked."""
        return all(link.ok for link in self.links)


async def walk(
    *,
    sessions: SessionFactory,
    moodle: MoodleClient,
    coursesales: CourseSalesApi,
    settings: Settings,
    query: Query,
    timeout: float = CALL_TIMEOUT,
    now: datetime | None = None,
) -> Walk:
    """Walk the chain for ``query`` (BadQuery when it cannot be asked as given, naming the field)."""
    query = query.checked()
    async with sessions() as s:
        records = await load(s, query)
    cs_read = Reader("CourseSales", missing=None if settings.coursesales.configured else COURSESALES_MISSING,
                     timeout=timeout)  # fmt: skip
    moodle_read = Reader("Moodle", missing=None if settings.moodle.configured else MOODLE_MISSING, timeout=timeout)
    sales, found = await asyncio.gather(
        read_coursesales(cs_read, coursesales, records, settings), read_moodle(moodle_read, moodle, records)
    )
    links = [
        *cs_links.contact_links(records, settings),
        *cs_links.document_link(records, query.document),
        *cs_links.course_date_links(records, sales, settings),
        *cs_links.sync_links(records),
        *moodle_links(records, found, settings, now or utcnow()),
    ]
    held = settings.secret_values()
    links = [_masked(link, held) for link in links]
    return Walk(
        links=links,
        next_step=mask_text(next_step(links, records, settings), held),
        contact=records.key,
        course_date=records.course_date_id,
        document=query.document or (records.registration.document_external_id if records.registration else None),
        reads=cs_read.reads + moodle_read.reads,
    )


def next_step(links: list[Link], r: Records, settings: Settings) -> str:
    """The fix of the first link that failed, else of the first that could not be checked, else "nothing to fix"."""
    for wanted in (False, None):
        for link in links:
            if link.ok is wanted:
                return link.fix or link.summary
    if r.key is None:
        return "nothing to fix: the course date is in Moodle with every enrolment we expect"
    where = f" at {settings.moodle.url}" if settings.moodle.url else ""
    return (f"nothing to fix: the student signs in to Moodle{where} as {r.username} with their CourseSales portal "
            "password; if that is refused, have them set the portal password again in CourseSales (it is sent "
            "again by itself)")  # fmt: skip


def _masked(link: Link, held: list[str]) -> Link:
    return replace(
        link,
        summary=mask_text(link.summary, held),
        detail=mask_text(link.detail, held) if link.detail else None,
        fix=mask_text(link.fix, held) if link.fix else None,
    )
