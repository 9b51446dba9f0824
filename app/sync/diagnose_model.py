"""The pieces of a diagnosis (app.sync.diagnose): the question, one link of the chain, and the bounded upstream read.

A read is bounded twice: in time (each under ``timeout``, as app/health_report.py bounds its checks) and in number
(after the upstream as a whole failed once, the walk asks it nothing more: the links it could not check say why).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from app.upstream import UpstreamError

T = TypeVar("T")
Area = Literal["coursesales", "sync", "moodle"]
CALL_TIMEOUT = 5.0  # seconds for one read: an operator is waiting on the answer
CONTACT_MAX = 255  # longer than any contact id, Default Contact Id or email
DOCUMENT_MAX = 128  # registrations.document_external_id
COURSE_DATE_MAX = 2_147_483_647


@dataclass(frozen=True)
class Link:
    """One link of the chain: passed (True), failed (False) or could not be checked (None), in plain words.

    ``fix`` is the next step to take when this link is the first one that does not pass.
    """

    area: Area
    name: str  # stable, e.g. "course_date.public"
    ok: bool | None
    summary: str
    detail: str | None = None
    fix: str | None = None


class BadQuery(ValueError):
    """The question cannot be asked as given; ``field`` names the parameter at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Query:
    """Why can this contact (an id, a username or an email) not see this course date (or the Document's)?"""

    contact: str | None = None
    course_date: int | None = None
    document: str | None = None

    def checked(self) -> Query:
        """The query with its values trimmed, or BadQuery naming the field at fault."""
        contact = (self.contact or "").strip() or None
        document = (self.document or "").strip() or None
        if self.course_date is not None and document is not None:
            raise BadQuery("document", "give either course_date or document, not both")
        if contact is None and self.course_date is None:
            raise BadQuery("contact", "give a contact (an id, a username or an email), or a course_date")
        if contact is not None and len(contact) > CONTACT_MAX:
            raise BadQuery("contact", f"longer than {CONTACT_MAX} characters: no contact is named so")
        if document is not None and len(document) > DOCUMENT_MAX:
            raise BadQuery("document", f"longer than {DOCUMENT_MAX} characters: no Document is named so")
        if self.course_date is not None and not 1 <= self.course_date <= COURSE_DATE_MAX:
            raise BadQuery("course_date", f"a course date id is between 1 and {COURSE_DATE_MAX}")
        return Query(contact, self.course_date, document)


@dataclass(frozen=True)
class Read(Generic[T]):
    """What one read gave: its value, or why there is none (``why`` set: the link says "could not check")."""

    value: T | None = None
    why: str | None = None

    @property
    def answered(self) -> bool:
        return self.why is None


class Reader:
    """The reads of one upstream for one walk: each within ``timeout``; none once the upstream failed as a whole."""

    def __init__(self, label: str, *, missing: str | None, timeout: float) -> None:
        self.label = label
        self.stopped = missing  # not configured, or it failed as a whole: the reason every later read gives
        self.timeout = timeout
        self.reads = 0

    async def __call__(self, call: Callable[[], Awaitable[T]]) -> Read[T]:
        if self.stopped is not None:
            return Read(why=self.stopped)
        self.reads += 1
        try:
            async with asyncio.timeout(self.timeout):
                return Read(await call())
        except TimeoutError:
            self.stopped = f"{self.label} did not answer within {self.timeout:g} s"
            return Read(why=self.stopped)
        except UpstreamError as exc:
            why = f"{self.label} did not answer: {exc}"
            if exc.transient or exc.unusable is not None:
                self.stopped = why  # down or refusing us: asking again now would only wait again
                return Read(why=why)
            return Read(why=f"{self.label} refused the read: {exc}")
        except Exception as exc:  # an answer of an unexpected shape: this link unchecked, never a failed walk
            return Read(why=f"the read of {self.label} failed: {type(exc).__name__}")
