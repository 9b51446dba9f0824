"""What an upstream's refusal during the round-trip check means for the sync, and the fix, in words an admin can act
on: a token can list its functions but not its capabilities, so a missing capability shows only here."""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.coursesales.errors import CourseSalesError
from app.moodle.errors import MoodleAuthError, MoodleError, MoodlePasswordPolicy
from app.sync import upstreams
from app.upstream import Unusable, UpstreamError

ROLE_PAGE = "Site administration > Users > Permissions > Define roles, the sync's role"
SERVICE_PAGE = "Site administration > Server > Web services > External services, the sync's service, Functions"
# Moodle's refusal names a capability as get_capability_string() does; the role editor lists it by its id.
CAPABILITIES = {
    "Create users": "moodle/user:create",
    "Update user profiles": "moodle/user:update",
    "Create courses": "moodle/course:create",
    "Update course settings": "moodle/course:update",
    "Restore courses": "moodle/restore:restorecourse",
    "Backup courses": "moodle/backup:backupcourse",
    "Enrol users": "enrol/manual:enrol",
    "Unenrol users from the course": "enrol/manual:unenrol",
    "View participants": "moodle/course:viewparticipants",
    "Change course ID number": "moodle/course:changeidnumber",
    "Change course category": "moodle/course:changecategory",
    "Change course full name": "moodle/course:changefullname",
    "Change course short name": "moodle/course:changeshortname",
    "Choose course visibility": "moodle/course:visibility",
}
# What the sync cannot do while a Moodle function is refused.
FAILS = {
    "core_webservice_get_site_info": "the sync cannot start any work",
    "core_user_get_users_by_field": "no student can be looked up: nothing syncs",
    "core_user_create_users": "new students will get no Moodle account",
    "core_user_update_users": "changed names, emails, passwords and suspensions will not reach Moodle",
    "core_course_get_courses_by_field": "no course can be looked up: nothing syncs",
    "core_course_create_courses": "new course dates will get no Moodle course",
    "core_course_update_courses": "course dates will not be kept in step, and copies of a template get no idnumber",
    "core_course_duplicate_course": "course duplication will fail (course dates whose category names a template)",
    "enrol_manual_enrol_users": "registrations will enrol nobody",
    "enrol_manual_unenrol_users": "cancelled registrations will not be unenrolled",
    "core_enrol_get_enrolled_users": "the reconcile cannot compare enrolments",
    "core_enrol_get_users_courses": "the reconcile's completion pull will fail",
    "core_completion_get_course_completion_status": "completions will not be confirmed: no certificate is sent",
}
_NAMED = re.compile(r"\(([^()]+)\)\.?\s*$")
HALTING_AUTH = "the token cannot be used for any call"


@dataclass(frozen=True)
class Explained:
    summary: str  # the upstream's answer
    meaning: str
    fix: str | None = None
    halt: str | None = None  # set when no later step of this upstream can run: why


def explain(exc: UpstreamError, call: str, *, role_id: int = 5) -> Explained:
    """The meaning and the fix of ``exc``, raised by ``call``."""
    if isinstance(exc, MoodleError):
        return _moodle(exc, call, role_id)
    if isinstance(exc, CourseSalesError):
        return _coursesales(exc, call)
    return Explained(str(exc), f"{call} failed")


def _fails(call: str) -> str:
    return FAILS.get(call, "the sync's calls to it will fail")


def _moodle(exc: MoodleError, call: str, role_id: int) -> Explained:
    said, code = str(exc), exc.errorcode
    whole = _moodle_whole(exc)
    if whole is not None:
        return whole
    if code == "accessexception":
        return Explained(
            said, f"{call} is not in the token's external service: {_fails(call)}", f"add {call} to it ({SERVICE_PAGE})"
        )
    if code == "nopermissions":
        name = (m.group(1) if (m := _NAMED.search(exc.message)) else "").strip()
        capability = CAPABILITIES.get(name, f"the capability Moodle names {name!r}" if name else "a capability")
        return Explained(
            said,
            f"{capability} missing from the token's role: {_fails(call)}",
            f"give the role {capability} ({ROLE_PAGE})",
        )
    if code == "cannotviewreport":
        return Explained(
            said,
            f"report/completion:view missing from the token's role: {_fails(call)}",
            f"give the role report/completion:view ({ROLE_PAGE})",
        )
    known = _moodle_known(exc, call, role_id)
    if known is not None:
        return known
    if exc.transient:
        return Explained(
            said, f"Moodle failed to answer {call}", "see Moodle's error log at this time; run the check again"
        )
    return Explained(said, f"Moodle refused {call}: {_fails(call)}")


def _moodle_whole(exc: MoodleError) -> Explained | None:
    """A fault of Moodle as a whole (no later Moodle step can run), or None."""
    said, why = str(exc), exc.unusable
    if why is Unusable.MAINTENANCE:
        return Explained(
            said, "Moodle is in maintenance", "run the check again once the upgrade is over", "Moodle is in maintenance"
        )
    if why is Unusable.UNREACHABLE:
        return Explained(
            said, "Moodle cannot be reached", "check moodle.url and the network to Moodle", "Moodle cannot be reached"
        )
    if not isinstance(exc, MoodleAuthError) or exc.errorcode == "accessexception":
        return None
    if exc.errorcode == "wsaccessusersuspended":
        meaning = "the token's user is suspended in Moodle: every call is refused, nothing syncs"
        fix = "unsuspend the token's user (Site administration > Users > Browse list of users)"
    elif exc.errorcode == "invalidtoken":
        meaning, fix = "Moodle does not know this token", "set SYNC_MOODLE__TOKEN to the sync's token"
    elif exc.status == 403:
        meaning = "the REST protocol is off on this Moodle"
        fix = "enable REST (Site administration > Server > Web services > Manage protocols)"
    else:
        meaning, fix = (
            f"Moodle refuses the token ({exc.errorcode})",
            upstreams.FIX[(upstreams.MOODLE, upstreams.AUTH_FAILED)],
        )
    return Explained(said, meaning, fix, HALTING_AUTH)


def _moodle_known(exc: MoodleError, call: str, role_id: int) -> Explained | None:
    """Refusals of one call that name a setting to correct."""
    said, code = str(exc), exc.errorcode
    if isinstance(exc, MoodlePasswordPolicy):
        return Explained(
            said,
            "Moodle's password policy is stricter than the users.password_min_* settings ("
            + " ".join(exc.rules) + "): a portal password the sync accepts would be refused",
            "set users.password_min_* to the site's policy (Site administration > Security > Site security settings)",
        )  # fmt: skip
    if code == "wsusercannotassign":
        return Explained(
            said,
            f"the token's role may not assign role {role_id} (enrolments.role_id): {_fails(call)}",
            f"allow it ({ROLE_PAGE}, Allow role assignments) or correct enrolments.role_id",
        )
    if code == "errorcatcontextnotvalid" or (code in ("invalidrecord", "invalidrecordunknown") and "categor" in said):
        return Explained(
            said,
            "the mapped Moodle category does not exist, or the token may not create courses in it",
            "correct the Moodle Category Id in CourseSales, or give the role moodle/course:create in that category",
        )
    if code == "setting_locked_by_permission":
        return Explained(
            said, "a duplication option needs moodle/backup:userinfo", "turn that courses.include_* option off"
        )
    if code in ("shortnametaken", "courseidnumbertaken"):
        return Explained(
            said,
            "another course holds a scratch short name or idnumber: the check never takes a course it did not make",
            "rename that course, or set another moodle.scratch_prefix",
        )
    return None


def _coursesales(exc: CourseSalesError, call: str) -> Explained:
    said = str(exc)
    fault = upstreams.fault_of(exc)
    if fault is not None:
        fix = upstreams.FIX.get((upstreams.COURSESALES, fault.state))
        return Explained(said, fault.reason, fix, fault.reason)
    if exc.transient:
        return Explained(
            said, f"CourseSales failed to answer {call}", "run the check again; if it lasts, ask CourseSales"
        )
    return Explained(said, f"CourseSales refused {call}")
