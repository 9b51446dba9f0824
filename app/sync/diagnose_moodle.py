"""The Moodle links of a diagnosis (app.sync.diagnose): the user, the course, the enrolment and the completion as
Moodle answers now, each with its fix in plain words.

Moodle's web services do not give one enrolment's status or dates: an enrolment listed among all but not among the
active ones is suspended or outside its dates, told apart by the dates we set on it (as the reconcile does,
app.sync.enrolment_repair).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.settings import Settings
from app.sync.diagnose_links import RECONCILE
from app.sync.diagnose_model import Link, Read
from app.sync.diagnose_reads import MoodleFacts
from app.sync.diagnose_records import Records
from app.sync.gone import deleted_in_moodle

PARTICIPANTS = "the course's Participants page in Moodle"


def _m(name: str, ok: bool | None, summary: str, fix: str | None = None, detail: str | None = None) -> Link:
    return Link("moodle", name, ok, summary, detail, fix)


def _unread(name: str, read: Read[Any]) -> Link:
    return _m(
        name, None, f"not checked: {read.why}", "ask again once Moodle answers (`moodle-sync probe` shows its state)"
    )


def moodle_links(r: Records, md: MoodleFacts, settings: Settings, now: datetime) -> list[Link]:
    out = user_links(r, md, settings) if md.user_asked else []
    if md.course_asked:
        out += course_links(r, md)
    if md.course.value is not None:
        out += enrolment_links(r, md, now) if r.key is not None else [count_link(r, md)]
    return out


def user_links(r: Records, md: MoodleFacts, settings: Settings) -> list[Link]:
    """Exists (not deleted), not suspended, signs in with an auth the sync manages."""
    if not md.user.answered:
        return [_unread("user.exists", md.user)]
    account, link = md.user.value, r.user_link
    if link is not None and deleted_in_moodle(account, link):
        fix = (f"Moodle user {link.moodle_user_id} was deleted: {RECONCILE} makes it again and enrols it again; if "
               f"it was deleted on purpose, `moodle-sync do-not-sync {r.key}`")  # fmt: skip
        return [_m("user.exists", False, f"Moodle user {link.moodle_user_id} ({link.username}) was deleted", fix)]
    if account is None:
        return [_m("user.exists", False, f"Moodle has no user {r.username}",
                   "the contact's events must make it (see the links above)")]  # fmt: skip
    who = f"Moodle user {account['id']} ({account.get('username')})"
    if link is None:
        fix = "it is not linked to this contact: see the sync links above (adoption), or link it by hand"
        return [_m("user.exists", False, f"{who} exists but is not linked to {r.key}", fix)]
    out = [_m("user.exists", True, f"{who} exists")]
    if "suspended" not in account:
        out.append(_m("user.suspended", None, "Moodle does not show whether it is suspended to this token",
                      "give the token's role moodle/user:update (see `moodle-sync check`)"))  # fmt: skip
    elif account["suspended"]:
        by_sync = " (by the sync: the contact is inactive)" if link.suspended_by_sync else ""
        fix = ("make the contact active in CourseSales" if link.suspended_by_sync else
               f"unsuspend {account.get('username')} in Moodle (Site administration > Users > Browse list of users)")  # fmt: skip
        out.append(_m("user.suspended", False, f"{who} is suspended{by_sync}", fix))
    else:
        out.append(_m("user.suspended", True, f"{who} is not suspended"))
    out.append(_auth(who, account.get("auth"), settings))
    return out


def _auth(who: str, auth: Any, settings: Settings) -> Link:
    allowed = settings.users.adoptable_auths
    if auth is None:
        return _m("user.auth", None, "Moodle does not show its authentication method to this token")
    if auth in allowed:
        return _m("user.auth", True, f"{who} signs in with auth {auth!r}")
    fix = f"set the authentication method of {who} to {settings.users.auth!r} in Moodle (its profile)"
    return _m("user.auth", False, f"{who} has auth {auth!r}: the portal password does not sign in through it", fix)


def course_links(r: Records, md: MoodleFacts) -> list[Link]:
    """Exists, visible to students."""
    if not md.course.answered:
        return [_unread("course.exists", md.course)]
    course = md.course.value
    if course is None:
        fix = f"{RECONCILE} makes the course of course date {r.course_date_id}, once the links above pass"
        return [_m("course.exists", False, f"Moodle has no course for course date {r.course_date_id}", fix)]
    what = f"Moodle course {course['id']} ({course.get('shortname')})"
    out = [_m("course.exists", True, f"{what} exists")]
    if int(course.get("visible", 1)):
        return [*out, _m("course.visible", True, f"{what} is visible to students")]
    fix = f"show {what} in Moodle (its settings: Course visibility: Show)"
    return [*out, _m("course.visible", False, f"{what} is hidden from students", fix)]


def enrolment_links(r: Records, md: MoodleFacts, now: datetime) -> list[Link]:
    """Exists, inside its dates, active; then the learner's completion."""
    user = md.user.value
    if user is None or r.user_link is None or deleted_in_moodle(user, r.user_link):
        return []
    if not md.enrolled.answered:
        return [_unread("enrolment.exists", md.enrolled)]
    uid = int(user["id"])
    if uid not in (md.enrolled.value or set()):
        fix = f"replay the registration's event, or {RECONCILE}: it enrols the learners Moodle lacks"
        return [_m("enrolment.exists", False, f"Moodle user {uid} is not enrolled in the course", fix)]
    out = [_m("enrolment.exists", True, f"Moodle user {uid} is enrolled in the course")]
    if not md.active.answered:
        return [*out, _unread("enrolment.active", md.active)]
    start, end = (r.enrolment.timestart, r.enrolment.timeend) if r.enrolment else (0, 0)
    stamp = int(now.timestamp())
    if start and stamp < start:
        out.append(_m("enrolment.dates", False, f"the enrolment starts on {_day(start)}",
                      f"wait until {_day(start)}, or set an earlier start on {PARTICIPANTS}"))  # fmt: skip
    elif end and stamp > end:
        fix = (f"the enrolment ended on {_day(end)} (the course date's end): to give access again, extend its end "
               f"date on {PARTICIPANTS}, or change the course date's end in CourseSales")  # fmt: skip
        out.append(_m("enrolment.dates", False, f"the enrolment ended on {_day(end)}", fix))
    else:
        out.append(_m("enrolment.dates", True, "today is inside the enrolment's dates" if start or end
                      else "the enrolment has no dates"))  # fmt: skip
    if uid in (md.active.value or set()):
        return [*out, _m("enrolment.active", True, "the enrolment is active"), _completion(md)]
    if not out[-1].ok:
        return [*out, _m("enrolment.active", None, "not active, as its dates say")]
    fix = (f"the enrolment is suspended in Moodle: set it active on {PARTICIPANTS}, or {RECONCILE} (it puts back "
           "enrolments suspended by hand)")  # fmt: skip
    return [*out, _m("enrolment.active", False, "the enrolment is suspended in Moodle", fix)]


def _completion(md: MoodleFacts) -> Link:
    if not md.completion.answered:
        return _unread("completion", md.completion)
    status = md.completion.value or {}
    if status.get("no_criteria"):
        return _m("completion", True, "the course has no completion criteria: nothing to complete")
    done = "has completed the course" if status.get("completed") else "has not completed the course yet"
    return _m("completion", True, f"the learner {done}")


def count_link(r: Records, md: MoodleFacts) -> Link:
    """Without a contact: the enrolments we expect against those Moodle has."""
    if not md.enrolled.answered or (not md.active.answered and md.enrolled.value):
        return _unread("enrolments.count", md.enrolled if not md.enrolled.answered else md.active)
    expected, enrolled, active = set(r.learners), md.enrolled.value or set(), md.active.value or set()
    missing, inactive = expected - enrolled, (expected & enrolled) - active
    summary = (f"{len(r.learners) + r.unlinked_learners} registered ({len(expected)} with a Moodle user); Moodle has "
               f"{len(enrolled)} enrolled, {len(active)} active")  # fmt: skip
    if not missing and not inactive:
        return _m("enrolments.count", True, summary)
    names = ", ".join(sorted(r.learners[u] for u in missing | inactive)[:10])
    detail = f"missing: {len(missing)}, not active: {len(inactive)} ({names})"
    fix = f"{RECONCILE}: it enrols again the learners Moodle lacks; or ask about one learner with contact="
    return _m("enrolments.count", False, summary, fix, detail)


def _day(stamp: int) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d")
