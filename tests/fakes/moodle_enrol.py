"""Enrolment and completion functions of the Moodle fake (enrol/unenrol are all-or-nothing batches)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.fakes.moodle_functions import get_course, missing_record, require_active_user
from tests.fakes.moodle_protocol import (
    MoodleException,
    invalid_param,
    moodle_error,
)
from tests.fakes.moodle_state import (
    ASSIGNABLE_ROLES,
    ENROLLED,
    SUSPENDED,
    completion_status,
    now,
    users_course,
)

if TYPE_CHECKING:
    from tests.fakes.moodle import MoodleFake


# -- enrolments -----------------------------------------------------------------------------------------------------


def _context_exists(fake: MoodleFake, courseid: int) -> dict[str, Any]:
    course = fake.state.courses.get(courseid)
    if course is None:  # context_course::instance(IGNORE_MISSING) + validate_context(false)
        raise invalid_param("Context does not exist")
    return course


def enrol_users(fake: MoodleFake, params: dict[str, Any]) -> None:
    staged: list[tuple[int, int, int, dict[str, Any]]] = []
    for item in params["enrolments"]:
        userid, courseid, roleid = item["userid"], item["courseid"], item["roleid"]
        _context_exists(fake, courseid)
        if roleid not in ASSIGNABLE_ROLES:
            raise moodle_error(
                "wsusercannotassign",
                f"You don't have the permission to assign this role ({roleid}) to this user ({userid}) "
                f"in this course ({courseid}).",
            )
        if fake.is_v5:
            require_active_user(fake, userid)
        elif not fake.state.live_user(userid):
            # 4.3: role_assign() refuses a missing or deleted user.
            raise MoodleException(
                "coding_exception",
                "codingerror",
                "Coding error detected, it must be fixed by a programmer: User ID does not exist or is deleted!",
                f"userid:{userid}",
            )
        status = SUSPENDED if item.get("suspend") else ENROLLED
        values = {"status": status, "timestart": item.get("timestart") or 0, "timeend": item.get("timeend") or 0}
        staged.append((userid, courseid, roleid, values))
    for userid, courseid, roleid, values in staged:
        # enrol_user(): an existing enrolment is updated (dates and status replaced, 092/093); the role is added.
        ue = fake.state.enrolments.setdefault((userid, courseid), {"roles": [], "timecreated": now()})
        ue.update(values)
        if roleid not in ue["roles"]:
            ue["roles"].append(roleid)


def unenrol_users(fake: MoodleFake, params: dict[str, Any]) -> None:
    staged: list[tuple[int, int]] = []
    for item in params["enrolments"]:
        userid, courseid = item["userid"], item["courseid"]
        # context_course::instance(MUST_EXIST)
        if courseid not in fake.state.courses:
            raise missing_record(fake, "course", "SELECT * FROM {course} WHERE id = ?", courseid)
        if fake.is_v5:
            require_active_user(fake, userid)
        elif userid not in fake.state.users:
            raise invalid_param(f"User id not exist: {userid}")
        staged.append((userid, courseid))
    for key in staged:
        fake.state.enrolments.pop(key, None)


ENROLLED_OPTIONS = frozenset(
    {
        "withcapability",
        "groupid",
        "onlyactive",
        "onlysuspended",
        "userfields",
        "limitfrom",
        "limitnumber",
        "sortby",
        "sortdirection",
    }
)


def get_enrolled_users(fake: MoodleFake, params: dict[str, Any]) -> list[dict[str, Any]]:
    course = get_course(fake, params["courseid"])
    options: dict[str, str] = {}
    for option in params["options"]:
        if option["name"] not in ENROLLED_OPTIONS:
            raise moodle_error("invalidextparam", f"Invalid external api parameter: {option['name']}")
        options[option["name"]] = option["value"]
    onlyactive = options.get("onlyactive", "0") not in ("", "0")
    onlysuspended = options.get("onlysuspended", "0") not in ("", "0")
    fields = {f.strip() for f in options["userfields"].split(",")} if options.get("userfields") else None
    out = []
    for uid in fake.state.course_users(course["id"]):
        user = fake.state.live_user(uid)
        active = fake.state.is_active_enrolment(uid, course["id"])
        if user is None or (onlyactive and not active) or (onlysuspended and active):
            continue
        details = fake.user_details(user, courseid=course["id"])
        if fields is not None:
            details = {k: v for k, v in details.items() if k in fields or k in ("id", "fullname")}
        out.append(details)
    start = int(options.get("limitfrom", "0") or 0)
    limit = int(options.get("limitnumber", "0") or 0)
    return out[start : start + limit] if limit else out[start:]


def get_users_courses(fake: MoodleFake, params: dict[str, Any]) -> list[dict[str, Any]]:
    userid = params["userid"]
    if fake.state.live_user(userid) is None:
        return []
    return [
        users_course(fake.state, userid, fake.state.courses[cid], fake.site_url, params["returnusercount"])
        for cid in fake.state.user_course_ids(userid)
        if fake.listed_course(userid, cid)
    ]


def completion_status_fn(fake: MoodleFake, params: dict[str, Any]) -> dict[str, Any]:
    course = get_course(fake, params["courseid"])
    userid = params["userid"]
    user = fake.state.users.get(userid)
    if user is None:
        raise missing_record(fake, "user", "SELECT * FROM {user} WHERE id = ?", userid)
    if user["deleted"]:
        raise moodle_error("userdeleted")
    if not fake.state.is_tracked(userid, course["id"]):
        raise moodle_error("usernotenroled", "User is not enrolled in this course")
    if not course["criteria"]:
        raise moodle_error("nocriteriaset", "No completion criteria set for this course")
    return completion_status(fake.state, userid, course["id"])
