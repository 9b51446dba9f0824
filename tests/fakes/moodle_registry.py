"""Parameter descriptions of the fake's web-service functions and the function registry.

The descriptions follow Moodle's *_parameters() definitions: unknown keys are refused ("Unexpected keys ...") and
missing required ones reported, with the same debuginfo as the recordings (015d, 140d).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tests.fakes.moodle_enrol import (
    completion_status_fn,
    enrol_users,
    get_enrolled_users,
    get_users_courses,
    unenrol_users,
)
from tests.fakes.moodle_functions import (
    create_categories,
    create_courses,
    create_users,
    duplicate_course,
    get_categories,
    get_courses_by_field,
    get_users_by_field,
    site_info,
    update_courses,
    update_users,
)
from tests.fakes.moodle_protocol import (
    DEFAULT,
    OPTIONAL,
    Multiple,
    Single,
    Value,
)

if TYPE_CHECKING:
    from tests.fakes.moodle import MoodleFake

Handler = Callable[["MoodleFake", dict[str, Any]], Any]
OPT, DEF = OPTIONAL, DEFAULT


def _v(ptype: str, required: str = "required", default: Any = None) -> Value:
    return Value(ptype, required, default)


# -- parameter keys ---------------------------------------------------------------------------------------------------

_USER_TEXT = ("firstnamephonetic", "lastnamephonetic", "middlename", "alternatename")
_USER_CONTACT = ("institution", "department", "phone1", "phone2", "address")


def _user_keys(create: bool) -> dict[str, Any]:
    req = "required" if create else OPT
    keys: dict[str, Any] = {} if create else {"id": _v("int")}
    if create:
        keys["createpassword"] = _v("bool", OPT)
    keys.update(
        {
            "username": _v("username", req),
            "auth": _v("plugin", DEF, "manual") if create else _v("plugin", OPT),
        }
    )
    if not create:
        keys["suspended"] = _v("int", OPT)
    keys.update(
        {
            "password": _v("raw", OPT),
            "firstname": _v("notags", req),
            "lastname": _v("notags", req),
            "email": _v("raw_trimmed", req),
            "maildisplay": _v("int", OPT),
            "city": _v("notags", OPT),
            "country": _v("alpha", OPT),
            "timezone": _v("timezone", OPT),
            "description": _v("raw", OPT),
        }
    )
    if not create:
        keys["userpicture"] = _v("int", OPT)
    keys.update({k: _v("notags", OPT) for k in _USER_TEXT})
    keys["interests"] = _v("text", OPT)
    keys["idnumber"] = _v("raw", DEF, "") if create else _v("raw", OPT)
    keys.update({k: _v("text" if k in ("institution", "department") else "notags", OPT) for k in _USER_CONTACT})
    keys["lang"] = _v("lang", DEF, "en") if create else _v("lang", OPT)
    keys["calendartype"] = _v("plugin", DEF, "gregorian") if create else _v("plugin", OPT)
    keys.update({"theme": _v("theme", OPT), "mailformat": _v("int", OPT)})
    keys["customfields"] = Multiple(Single({"type": _v("alpha"), "value": _v("raw")}), OPT)
    keys["preferences"] = Multiple(Single({"type": _v("raw"), "value": _v("raw")}), OPT)
    return keys


def _course_keys(create: bool) -> dict[str, Any]:
    req = "required" if create else OPT
    keys: dict[str, Any] = {} if create else {"id": _v("int")}
    keys.update({"fullname": _v("text", req), "shortname": _v("text", req), "categoryid": _v("int", req)})
    keys.update({"idnumber": _v("raw", OPT), "summary": _v("raw", OPT)})
    defaults = {"summaryformat": 1, "format": "topics", "showgrades": 1, "newsitems": 5}
    for key, default in defaults.items():
        ptype = "plugin" if key == "format" else "int"
        keys[key] = _v(ptype, DEF, default) if create else _v(ptype, OPT)
    keys.update({k: _v("int", OPT) for k in ("startdate", "enddate", "numsections")})
    keys.update({k: _v("int", DEF, 0) if create else _v("int", OPT) for k in ("maxbytes", "showreports")})
    keys.update({k: _v("int", OPT) for k in ("visible", "hiddensections")})
    for key in ("groupmode", "groupmodeforce", "defaultgroupingid"):
        keys[key] = _v("int", DEF, 0) if create else _v("int", OPT)
    keys.update({"enablecompletion": _v("int", OPT), "completionnotify": _v("int", OPT)})
    keys.update({"lang": _v("alphanumext", OPT), "forcetheme": _v("plugin", OPT)})
    keys["courseformatoptions"] = Multiple(Single({"name": _v("alpha"), "value": _v("raw")}), OPT)
    keys["customfields"] = Multiple(Single({"shortname": _v("alphanumext"), "value": _v("raw")}), OPT)
    return keys


def _unenrol_keys(fake: MoodleFake) -> dict[str, Any]:
    keys: dict[str, Any] = {"userid": _v("int"), "courseid": _v("int")}
    if not fake.is_v5:  # 4.3 accepted and ignored roleid; 5.0 refuses it (140)
        keys["roleid"] = _v("int", OPT)
    return keys


# -- registry -------------------------------------------------------------------------------------------------------


def param_descriptions(fake: MoodleFake) -> dict[str, Single]:
    """Top-level parameter descriptions per function (some differ between 4.3 and 5.0)."""
    options = Multiple(Single({"name": _v("alphanumext"), "value": _v("raw")}), DEF, [])
    return {
        "core_webservice_get_site_info": Single({"serviceshortnames": Multiple(_v("alphanumext"), DEF, [])}),
        "core_user_create_users": Single({"users": Multiple(Single(_user_keys(create=True)))}),
        "core_user_update_users": Single({"users": Multiple(Single(_user_keys(create=False)))}),
        "core_user_get_users_by_field": Single({"field": _v("alpha"), "values": Multiple(_v("raw"))}),
        "core_course_get_categories": Single(
            {
                "criteria": Multiple(Single({"key": _v("alpha"), "value": _v("raw")}), DEF, []),
                "addsubcategories": _v("bool", DEF, True),
            }
        ),
        "core_course_create_categories": Single(
            {
                "categories": Multiple(
                    Single(
                        {
                            "name": _v("text"),
                            "parent": _v("int", DEF, 0),
                            "idnumber": _v("raw", OPT),
                            "description": _v("raw", OPT),
                            "descriptionformat": _v("int", DEF, 1),
                            "theme": _v("theme", OPT),
                        }
                    )
                )
            }
        ),
        "core_course_create_courses": Single({"courses": Multiple(Single(_course_keys(create=True)))}),
        "core_course_update_courses": Single({"courses": Multiple(Single(_course_keys(create=False)))}),
        "core_course_get_courses_by_field": Single({"field": _v("alpha", DEF, ""), "value": _v("raw", DEF, "")}),
        "core_course_duplicate_course": Single(
            {
                "courseid": _v("int"),
                "fullname": _v("text"),
                "shortname": _v("text"),
                "categoryid": _v("int"),
                "visible": _v("int", DEF, 1),
                "options": Multiple(Single({"name": _v("alphaext"), "value": _v("raw")}), DEF, []),
            }
        ),
        "enrol_manual_enrol_users": Single(
            {
                "enrolments": Multiple(
                    Single(
                        {
                            "roleid": _v("int"),
                            "userid": _v("int"),
                            "courseid": _v("int"),
                            "timestart": _v("int", OPT),
                            "timeend": _v("int", OPT),
                            "suspend": _v("int", OPT),
                        }
                    )
                )
            }
        ),
        "enrol_manual_unenrol_users": Single({"enrolments": Multiple(Single(_unenrol_keys(fake)))}),
        "core_enrol_get_enrolled_users": Single({"courseid": _v("int"), "options": options}),
        "core_enrol_get_users_courses": Single({"userid": _v("int"), "returnusercount": _v("bool", DEF, True)}),
        "core_completion_get_course_completion_status": Single({"courseid": _v("int"), "userid": _v("int")}),
    }


HANDLERS: dict[str, Handler] = {
    "core_webservice_get_site_info": site_info,
    "core_user_create_users": create_users,
    "core_user_update_users": update_users,
    "core_user_get_users_by_field": get_users_by_field,
    "core_course_get_categories": get_categories,
    "core_course_create_categories": create_categories,
    "core_course_create_courses": create_courses,
    "core_course_update_courses": update_courses,
    "core_course_get_courses_by_field": get_courses_by_field,
    "core_course_duplicate_course": duplicate_course,
    "enrol_manual_enrol_users": enrol_users,
    "enrol_manual_unenrol_users": unenrol_users,
    "core_enrol_get_enrolled_users": get_enrolled_users,
    "core_enrol_get_users_courses": get_users_courses,
    "core_completion_get_course_completion_status": completion_status_fn,
}

# Real Moodle functions the fake does not implement: calling one that is not in the service is an access error
# (004), as on a real site; anything else is an unknown function (005).
OTHER_KNOWN_FUNCTIONS = frozenset(
    {
        "core_user_delete_users",
        "core_user_get_users",
        "core_user_get_course_user_profiles",
        "core_user_get_private_files_info",
        "core_user_update_picture",
        "core_user_agree_site_policy",
        "core_course_get_courses",
        "core_course_delete_courses",
        "core_course_get_contents",
        "core_course_update_categories",
        "core_course_delete_categories",
        "core_course_import_course",
        "core_course_search_courses",
        "core_course_get_recent_courses",
        "core_course_get_course_module",
        "core_enrol_get_course_enrolment_methods",
        "core_enrol_search_users",
        "core_enrol_edit_user_enrolment",
        "core_enrol_unenrol_user_enrolment",
        "core_role_assign_roles",
        "core_role_unassign_roles",
        "core_group_create_groups",
        "core_group_get_course_groups",
        "core_group_add_group_members",
        "core_group_delete_group_members",
        "core_cohort_create_cohorts",
        "core_cohort_add_cohort_members",
        "core_completion_get_activities_completion_status",
        "core_completion_mark_course_self_completed",
        "core_completion_update_activity_completion_status_manually",
        "core_completion_override_activity_completion_status",
        "core_calendar_get_calendar_events",
        "core_grades_get_gradeitems",
        "core_message_send_instant_messages",
        "core_notes_create_notes",
        "core_files_upload",
        "core_webservice_get_site_info",
        "gradereport_user_get_grade_items",
        "mod_assign_get_assignments",
        "mod_forum_get_forums_by_courses",
        "enrol_self_enrol_user",
        "enrol_guest_get_instance_info",
        "tool_mobile_get_config",
    }
)
KNOWN_FUNCTIONS = frozenset(HANDLERS) | OTHER_KNOWN_FUNCTIONS
