"""Events waiting for a person (failed, needs_review) grouped by cause, each with its fix in plain words for the
CourseSales administrator or the Moodle admin, and one replay for the whole group once it is fixed (issue 18).

A cause is read from an event's status, kind and ``last_error`` as app/sync and app/jobs write them. CAUSES is the one
table of those messages: first match wins, its pattern's named groups fill key, title and fix (key parts made
URL-safe by ``_slug``); an event no row knows falls to a catch-all per kind and error code, so every event is in
exactly one group. A new failure message in app/sync deserves its row here, and a test in tests/test_attention.py.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.models import ATTENTION_STATUSES, Event, EventStatus
from app.events.registry import COMPLETION_KINDS, EventKind
from app.sync import operations

KEY_MAX = 128
KEY_PATTERN = r"^[a-z0-9][a-z0-9._:-]*$"  # what a key is made of (_slug), checked at the edge
TITLE_MAX, FIX_MAX, SAMPLES = 240, 800, 20
REPLAY_LIMIT = 5000  # events replayed by one call; a second call finds the rest (replayed ones no longer wait)
REVIEW = EventStatus.needs_review


class Stored(Protocol):
    """What a cause is read from: an Event, or a row of its columns."""

    kind: str
    status: str
    last_error: str | None


@dataclass(frozen=True)
class Cause:
    key: str  # stable and URL-safe, e.g. "category-unmapped:40"
    title: str  # what went wrong, with its specifics
    fix: str  # what a person does, and where


@dataclass(frozen=True)
class Pattern:
    """One row of CAUSES: ``when`` searched in last_error (with ``status`` and ``kinds``, when set, matched too)."""

    key: str
    when: re.Pattern[str]
    title: str
    fix: str
    status: str | None
    kinds: tuple[str, ...]

    def cause(self, found: re.Match[str], event: Stored) -> Cause:
        words = {"kind": event.kind, "what": WHAT.get(event.kind, event.kind)}
        words.update({k: v for k, v in found.groupdict().items() if v is not None})
        key = self.key.format(**{k: _slug(v) for k, v in words.items()})
        return Cause(key, _clip(self.title.format(**words), TITLE_MAX), _clip(self.fix.format(**words), FIX_MAX))


def _row(key: str, when: str, title: str, fix: str, status: str | None = None, kinds: tuple[str, ...] = ()) -> Pattern:
    return Pattern(key, re.compile(when), title, fix, status, kinds)


THEN = " Then replay this group."
LINK_USER = "link it by hand (POST /api/links/users with its username and Moodle user id)"
# fmt: off
CAUSES: tuple[Pattern, ...] = (
    # Outcomes nobody can know without looking: the step call or registration post may have gone through.
    _row("needs-review:completion", "", "Completion sent to CourseSales, outcome unknown: check CourseSales, then resolve",
         "In CourseSales, open the Document the event names and look whether its process step ran: if it did, resolve "
         "the event; if it did not, replay it (replaying the group says none of them ran).", status=REVIEW, kinds=COMPLETION_KINDS),
    _row("needs-review:registration", r"may have posted this registration|registration post's outcome is unknown",
         "Registration maybe posted to CourseSales, outcome unknown: check CourseSales, then resolve",
         "In CourseSales, look whether the person's registration exists: if it does, resolve the event; if not, replay it.", status=REVIEW),
    _row("document-missing", r"names no Document", "Registration posted, but CourseSales named no Document",
         "Find the registration's Document in CourseSales and link it by hand for completions, then resolve the events."),
    # Courses (the course event's own error, and a registration's "course date N has no Moodle course: <it>").
    _row("category-unmapped:{id}", r"course category (?P<name>.+?) \((?P<id>\d+)\) has no Moodle category: (?P<field>field .+?) is empty",
         "Moodle category not mapped for CourseSales course category {name} ({id})",
         "In CourseSales, set the Moodle Category Id ({field}) of course category {name} ({id}), or of a parent "
         "category, to the id of the Moodle category its courses belong in." + THEN),
    _row("category-not-a-number:{id}", r"category (?P<name>.+?) \((?P<id>\d+)\): Moodle Category Id (?P<value>.+?) is not a number",
         "The Moodle Category Id of CourseSales course category {name} ({id}) is not a number: {value}",
         "In CourseSales, correct the Moodle Category Id of course category {name} ({id}): the number of a Moodle "
         "category (in Moodle: Site administration > Courses > Manage courses and categories)." + THEN),
    _row("category-unknown:{id}", r"its course category (?P<id>\d+) is not in CourseSales' category list",
         "CourseSales course category {id} is not in CourseSales' category list",
         "In CourseSales, check that course category {id} exists and is active." + THEN),
    _row("course-date-unlisted:{cd}", r"course date (?P<cd>\d+) is not in CourseSales' list of Moodle course dates",
         "Course date {cd} is not in CourseSales' list of Moodle course dates",
         "In CourseSales, check that course date {cd} is scheduled, public and exported to Moodle." + THEN),
    _row("course-not-in-moodle:{cd}", r"auto_create is off and no Moodle course has idnumber (?P<cd>\d+)",
         "No Moodle course for course date {cd}, and the sync does not create courses",
         "In Moodle, create the course with Course ID number {cd} (or link an existing one: POST /api/links/courses)." + THEN),
    _row("template-missing:{template}", r"template course (?P<template>.+?) is not in Moodle", "Template course {template} is not in Moodle",
         "In CourseSales, correct the course category's template (a Moodle course id or short name), or create the "
         "template course {template} in Moodle." + THEN),
    _row("template-refused:{template}", r"Moodle refused to copy template course (?P<template>.+?): ",
         "Moodle refused to copy template course {template}",
         "Moodle admin: check that template course {template} exists and that the sync's web-service user may back "
         "up and restore courses (moodle/backup:backupcourse, moodle/restore:restorecourse)." + THEN),
    _row("shortname-taken:{shortname}", r"Moodle short name (?P<shortname>.+?) is taken by another course",
         "Moodle short name {shortname} is already used by another course",
         "In Moodle, rename the other course whose short name is {shortname}." + THEN),
    _row("course-conflict:{cd}", r"Moodle refused the course: .*\(short name (?P<shortname>.+) or idnumber '(?P<cd>\d+)'\)",
         "A Moodle course already has the short name {shortname} or the Course ID number {cd}",
         "In Moodle, find that course: if it is course date {cd}'s, link it (POST /api/links/courses); else rename it." + THEN),
    _row("moodle-category-refused:{cat}", r"Moodle refused to create the course in category (?P<cat>\d+)",
         "Moodle refused to create courses in Moodle category {cat}",
         "Moodle admin: check that category {cat} exists and the sync may create courses in it (moodle/course:create); "
         "if the id is wrong, correct the Moodle Category Id in CourseSales." + THEN),
    _row("course-missing:{cd}", r"course date (?P<cd>\d+) has no Moodle course: (?P<why>.*)",
         "Course date {cd} has no Moodle course", "The course was not made because: {why}. Fix that." + THEN),
    # Users.
    _row("email-taken", r"email .+ already belongs to Moodle user", "The email address already belongs to another Moodle user",
         "If that Moodle account is the same person's, " + LINK_USER + " or turn on users.adopt_existing and "
         "users.match_by_email; otherwise change one of the two emails (the contact's in CourseSales, or the account's in Moodle)." + THEN),
    _row("user-refused", r"Moodle refused the new user as invalid",
         "Moodle refused to create the user (usually its email is used by an account the sync cannot see)",
         "Moodle admin: search the users for the contact's email, and give the sync's role "
         "moodle/site:viewuseridentity so that it sees emails." + THEN),
    _row("password-policy", r"Moodle refused the password|does not meet the site password policy",
         "Moodle refused the password (the site's password policy)",
         "Ask the person to choose a password in the CourseSales portal that meets the Moodle site's rules (length, "
         "digits, upper and lower case, a symbol): the new one arrives by itself. If the sync's users.password_* "
         "settings are stricter than Moodle's, align them, then replay this group."),
    _row("no-password", r"the contact has no password", "The contact has no portal password, so no Moodle user is made",
         "In CourseSales, give the contact a portal login with a password (it arrives by itself); if the contact needs "
         "no Moodle account, resolve the events."),
    _row("username-taken", r"could not rename the user to .+: that username is taken",
         "The contact's new username is already used by another Moodle user",
         "In Moodle, change or remove the other account with that username, or change the contact's in CourseSales." + THEN),
    _row("account-protected", r"it is a site administrator|is the web-service token's own user",
         "A Moodle administrator or the sync's own Moodle user has the contact's username",
         "Give the contact another username in CourseSales (the sync never manages such an account), or resolve the events."),
    _row("account-auth:{auth}", r"has auth '?(?P<auth>[^',]*)'?, not one of users.adopt_auths",
         "A Moodle account with the contact's username logs in with '{auth}', which the sync does not take over",
         "If the account is the person's, " + LINK_USER + " or add '{auth}' to users.adopt_auths." + THEN),
    _row("account-exists", r"exists and this service did not make it",
         "A Moodle account with the contact's username already exists, and the sync did not make it",
         "If it is the person's account, " + LINK_USER + " or turn on users.adopt_existing, then replay this group; "
         "if it is someone else's, give the contact another username in CourseSales."),
    # Completions and Moodle enrolments sent to CourseSales.
    _row("course-unlinked:{course}", r"Moodle course (?P<course>\d+) is not linked to a (CourseSales )?course date",
         "Moodle course {course} is not linked to a CourseSales course date",
         "Link Moodle course {course} to its course date (POST /api/links/courses)." + THEN),
    _row("user-unlinked", r"Moodle user \d+ is not linked to a CourseSales contact", "Moodle users not linked to a CourseSales contact",
         "Link each Moodle user to its contact (POST /api/links/users), or wait for CourseSales to send the contact." + THEN),
    _row("no-registration:{cd}", r"no active registration of .+ for course date (?P<cd>\d+)",
         "Completions in course date {cd} of people without a registration the sync knows",
         "In CourseSales, check that each person is registered for course date {cd} (the registration arrives by "
         "itself), then replay this group; resolve the events of people who never were."),
    _row("step-refused:{step}", r"CourseSales refused process step (?P<step>\d+)", "CourseSales refused process step {step}",
         "In CourseSales, check that process step {step} is on the Documents' current process path." + THEN),
    _row("setting:completion.process_step_id", r"completion.process_step_id is not set", "The completion process step is not set",
         "Set completion.process_step_id in the sync's configuration and restart it." + THEN),
    _row("setting:new_enrolments", r"new_enrolments is on but (?P<missing>.+) not set",
         "Moodle enrolments cannot be sent to CourseSales: {missing} not configured",
         "Set {missing} in the sync's configuration and restart it." + THEN),
    _row("moodle-viewfullnames", r"Moodle hides first and last names", "Moodle hides people's names from the sync",
         "Moodle admin: give the sync's web-service role moodle/site:viewfullnames." + THEN),
    # The upstreams and the service itself.
    _row("moodle-token", r"Moodle refused our token", "Moodle refused the sync's token or one of its functions",
         "Moodle admin: check the sync's token and its external service's functions (`moodle-sync check`)." + THEN),
    _row("coursesales-login", r"CourseSales refused our login", "CourseSales refused the sync's login",
         "In CourseSales, check the sync's web-services login (an active Soap login with a password)." + THEN),
    _row("gave-up:{kind}", r"gave up after \d+ attempts", "{what}: Moodle or CourseSales could not be reached for too long",
         "Check that Moodle and CourseSales answer (`moodle-sync check`)." + THEN),
    _row("unknown-kind:{kind}", r"no handler for event kind", "Events of a kind this version does not handle: {kind}",
         "Upgrade the sync to a version that handles them, or resolve the events."),
)
WHAT: dict[str, str] = {  # event kinds in plain words
    EventKind.contact_upserted: "Contact update", EventKind.registration_registered: "Registration",
    EventKind.registration_cancelled: "Cancellation", EventKind.course_date_changed: "Course date change",
    EventKind.course_sync: "Course creation", EventKind.moodle_course_completed: "Completion",
    EventKind.completion_pull: "Completion found by the reconcile",
    EventKind.moodle_user_enrolment_created: "Moodle enrolment sent to CourseSales",
}
CATCH_ALL_FIX = ("Open one of the events (GET /api/events/<id>): its error says what Moodle or CourseSales answered. "
                 "Fix that there, then replay this group; resolve the events that need nothing more.")
REVIEW_FIX = "Look in CourseSales and Moodle whether it happened: if it did, resolve the events; if not, replay them."
# fmt: on


def cause_of(event: Stored) -> Cause:
    """The cause of one failed or needs_review event: CAUSES' first match, else the catch-all per kind and code."""
    error = event.last_error or ""
    for p in CAUSES:
        if (p.status and event.status != p.status) or (p.kinds and event.kind not in p.kinds):
            continue
        if (found := p.when.search(error)) is not None:
            return p.cause(found, event)
    said, whose = error or "no reason recorded", WHAT.get(event.kind, event.kind)
    if event.status == REVIEW:
        return Cause(
            f"needs-review:{_slug(event.kind)}", _clip(f"{whose}, outcome unknown: {said}", TITLE_MAX), REVIEW_FIX
        )
    return Cause(
        f"error:{_slug(event.kind)}:{_code(error)}", _clip(f"{whose} failed: {said}", TITLE_MAX), CATCH_ALL_FIX
    )


def _code(error: str) -> str:
    """An error's code: Moodle's errorcode ("[invalidparameter]"), else the HTTP status, else its wording's hash."""
    if codes := re.findall(r"\[([A-Za-z0-9_]{1,40})\]", error):
        return _slug(codes[-1])
    if (status := re.search(r"\(HTTP (\d{3})\)", error)) is not None:
        return f"http-{status.group(1)}"
    if not error:
        return "none"
    wording = re.sub(r"\d+|'[^']*'|\"[^\"]*\"", "#", error)[:80]  # the same refusal of other records: one group
    return "msg-" + hashlib.sha256(wording.encode()).hexdigest()[:8]


def _slug(value: str) -> str:
    """A key part: lower case letters, digits, ".", "_", "-"; any other value gets a hash that keeps it distinct."""
    plain = re.sub(r"[^a-z0-9._-]+", "-", value.lower()).strip("-.")[:40]
    if plain == value and plain:
        return plain
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{plain[:31]}-{digest}" if plain else digest


def _clip(text: str, limit: int) -> str:  # a title or fix holding a long error stays readable
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Group:
    """The events of one cause among those read: how many, of which statuses and kinds, when, and a sample."""

    cause: Cause
    newest_at: datetime
    oldest_at: datetime
    count: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    event_ids: list[int] = field(default_factory=list)  # the newest SAMPLES

    def add(self, event_id: int, status: str, kind: str, at: datetime) -> None:
        self.count += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        self.newest_at, self.oldest_at = max(self.newest_at, at), min(self.oldest_at, at)
        if len(self.event_ids) < SAMPLES:
            self.event_ids.append(event_id)


class Groups(list[Group]):
    """The groups, largest first; ``total``: the events waiting for a person, ``truncated``: not all were read."""

    total: int = 0
    truncated: bool = False


_WAITING = col(Event.status).in_([str(s) for s in ATTENTION_STATUSES])  # the partial index ix_events_attention
_READ = (col(Event.id), col(Event.kind), col(Event.status), col(Event.last_error))  # what cause_of reads


async def groups(session: AsyncSession, *, limit_events: int = 5000) -> Groups:
    """The events waiting for a person by cause, from the newest ``limit_events`` of them (read through the partial
    index, so the finished events kept for good are never walked)."""
    newest = select(*_READ, col(Event.updated_at)).where(_WAITING).limit(limit_events + 1)
    found = (await session.execute(newest.order_by(col(Event.updated_at).desc(), col(Event.id).desc()))).all()
    truncated = len(found) > limit_events
    by_key: dict[str, Group] = {}
    for row in found[:limit_events]:
        cause = cause_of(row)
        group = by_key.setdefault(cause.key, Group(cause, row.updated_at, row.updated_at))
        group.add(row.id, row.status, row.kind, row.updated_at)
    total = min(len(found), limit_events)
    if truncated:
        total = (await session.execute(select(func.count()).select_from(Event).where(_WAITING))).scalar_one()
    out = Groups(sorted(by_key.values(), key=lambda g: (-g.count, -g.newest_at.timestamp(), g.cause.key)))
    out.total, out.truncated = total, truncated
    return out


async def replay_group(
    session: AsyncSession, key: str, *, actor: str, note: str | None, limit: int = REPLAY_LIMIT
) -> list[Event]:
    """Replay, oldest first, every event waiting for a person whose cause is ``key`` (up to ``limit``), each through
    operations.replay and so audited with ``actor``; the caller commits and queues them. An unknown key, or one no
    event has any more, is an OperationError 404."""
    waiting = await session.stream(select(*_READ).where(_WAITING).execution_options(yield_per=1000))
    ids = [row.id async for row in waiting if cause_of(row).key == key]
    # Locked, then checked again: an event another operator replayed or resolved meanwhile is left alone.
    locked = select(Event).where(col(Event.id).in_(sorted(ids)[:limit]), _WAITING).order_by(col(Event.id))
    events = [e for e in (await session.execute(locked.with_for_update())).scalars() if cause_of(e).key == key]
    if not events:
        raise operations.OperationError(404, f"no event waits for a person with cause {key!r}")
    why = f"attention group {key}" + (f": {note}" if note else "")
    return [await operations.replay(session, e.id, actor=actor, note=why) for e in events]
