"""In-memory Moodle site for the fake: the recorded starting state and the objects Moodle's answers are made of.

Starting state (tests/fixtures/moodle/v43/README.md): guest id 1, admin id 2, token user ``syncbot`` id 3;
'Category 1' id 1 and 'Integration Contract Tests' id 2 (``CT-ROOT``); template course ``TEMPLATE-101`` id 2
(``TPL-101``, completion on, one self-completion criterion). New ids continue from there, so a replay of the
recordings in file order gives the recorded ids (alice=4, ``CT-C1``=3, ...).
"""

from __future__ import annotations

import time
from typing import Any

from tests.fakes.moodle_protocol import OMITTED

ROLES: dict[int, str] = {1: "manager", 2: "coursecreator", 3: "editingteacher", 4: "teacher", 5: "student", 7: "user"}
# Roles the token user may assign (moodle/role:assign allow list of the recorded site).
ASSIGNABLE_ROLES = frozenset({3, 4, 5})
# Roles that count for course completion (moodle/course:isincompletionreports).
TRACKED_ROLES = frozenset({5})
# $CFG->coursecontact: the roles listed as course contacts.
CONTACT_ROLES = frozenset({3})
# Roles holding moodle/course:viewhiddencourses in a course.
TEACHER_ROLES = frozenset({1, 3, 4})
COURSE_FILTERS = ("displayh5p", "activitynames", "mathjaxloader", "emoticon", "urltolink", "mediaplugin")
ENROLLED, SUSPENDED = 0, 1


def now() -> int:
    return int(time.time())


def new_user(uid: int, username: str, firstname: str, lastname: str, email: str, **extra: Any) -> dict[str, Any]:
    user: dict[str, Any] = {
        "id": uid,
        "username": username,
        "password": "",
        "firstname": firstname,
        "lastname": lastname,
        "email": email,
        "idnumber": "",
        "auth": "manual",
        "suspended": False,
        "confirmed": True,
        "deleted": False,
        "lang": "en",
        "theme": "",
        "timezone": "99",
        "mailformat": 1,
        "maildisplay": 2,
        "city": "",
        "country": "",
        "phone1": "",
        "phone2": "",
        "department": "",
        "institution": "",
        "address": "",
        "description": "",
        "firstaccess": 0,
        "lastaccess": 0,
        "customfields": [],
        "preferences": [],
        "timecreated": now(),
        "timemodified": now(),
    }
    user.update(extra)
    return user


def new_course(cid: int, fullname: str, shortname: str, category: int, **extra: Any) -> dict[str, Any]:
    course: dict[str, Any] = {
        "id": cid,
        "fullname": fullname,
        "shortname": shortname,
        "category": category,
        "idnumber": "",
        "summary": "",
        "summaryformat": 1,
        "format": "topics",
        "showgrades": 1,
        "newsitems": 5,
        "startdate": 0,
        "enddate": 0,
        "maxbytes": 0,
        "showreports": 0,
        "visible": 1,
        "groupmode": 0,
        "groupmodeforce": 0,
        "defaultgroupingid": 0,
        "enablecompletion": 1,
        "completionnotify": 0,
        "lang": "",
        "theme": "",
        "marker": 0,
        "legacyfiles": 0,
        "calendartype": "",
        "timecreated": now(),
        "timemodified": now(),
        "requested": 0,
        "cacherev": now(),
        "sortorder": 0,
        "hiddensections": 1,
        "coursedisplay": 0,
        "showactivitydates": False,
        # Completion criteria by type (1 = self completion); empty means "no criteria set".
        "criteria": [],
    }
    course.update(extra)
    return course


def new_category(catid: int, name: str, parent: int, path: str, sortorder: int, **extra: Any) -> dict[str, Any]:
    category: dict[str, Any] = {
        "id": catid,
        "name": name,
        "idnumber": None,
        "description": "",
        "descriptionformat": 1,
        "parent": parent,
        "sortorder": sortorder,
        "visible": 1,
        "visibleold": 1,
        "timemodified": now(),
        "depth": path.count("/"),
        "path": path,
        "theme": "",
    }
    category.update(extra)
    return category


class SiteState:
    """The site's tables as plain dicts, public so tests can read and arrange them directly."""

    def __init__(self, *, showactivitydates: bool = False) -> None:
        # Site default for new courses (moodlecourse/showactivitydates): off on 4.3, on on 5.0 (067).
        self.course_defaults: dict[str, Any] = {"showactivitydates": showactivitydates}
        self.users: dict[int, dict[str, Any]] = {
            1: new_user(1, "guest", "Guest user", " ", "root@localhost", auth="manual"),
            2: new_user(2, "admin", "Admin", "User", "admin@example.invalid"),
            3: new_user(3, "syncbot", "Sync", "Bot", "syncbot@example.invalid"),
        }
        self.categories: dict[int, dict[str, Any]] = {
            1: new_category(1, "Category 1", 0, "/1", 10000),
            2: new_category(
                2,
                "Integration Contract Tests",
                0,
                "/2",
                20000,
                idnumber="CT-ROOT",
                description="Created by setup script",
            ),
        }
        self.courses: dict[int, dict[str, Any]] = {
            2: new_course(
                2,
                "Template course 101",
                "TEMPLATE-101",
                2,
                idnumber="TPL-101",
                summary="Template for duplication",
                newsitems=1,
                sortorder=20001,
                criteria=[1],
                **self.course_defaults,
            ),
        }
        # (userid, courseid) -> {"status", "timestart", "timeend", "roles": [roleid, ...], "timecreated"}
        self.enrolments: dict[tuple[int, int], dict[str, Any]] = {}
        # (userid, courseid) -> {"criteria": {type: timecompleted}, "timecompleted": int | None}
        self.completions: dict[tuple[int, int], dict[str, Any]] = {}
        # Sequences are not rolled back by a failed transaction (PostgreSQL), so a failed batch burns ids (065 -> 081).
        self.next_ids: dict[str, int] = {"user": 4, "course": 3, "category": 3}

    def next_id(self, table: str) -> int:
        value = self.next_ids[table]
        self.next_ids[table] = value + 1
        return value

    # -- queries --------------------------------------------------------------------------------------------------

    def live_user(self, uid: int) -> dict[str, Any] | None:
        user = self.users.get(uid)
        return user if user and not user["deleted"] else None

    def is_active_enrolment(self, userid: int, courseid: int, at: int | None = None) -> bool:
        ue = self.enrolments.get((userid, courseid))
        if not ue or ue["status"] != ENROLLED:
            return False
        at = now() if at is None else at
        return ue["timestart"] <= at and (ue["timeend"] == 0 or ue["timeend"] > at)

    def course_users(self, courseid: int) -> list[int]:
        return sorted(uid for (uid, cid) in self.enrolments if cid == courseid)

    def user_course_ids(self, userid: int) -> list[int]:
        return sorted(cid for (uid, cid) in self.enrolments if uid == userid)

    def is_tracked(self, userid: int, courseid: int) -> bool:
        ue = self.enrolments.get((userid, courseid))
        return bool(ue) and self.is_active_enrolment(userid, courseid) and bool(TRACKED_ROLES & set(ue["roles"]))


# -- answer objects -------------------------------------------------------------------------------------------------


def fullname(user: dict[str, Any]) -> str:
    return f"{user['firstname']} {user['lastname']}"


def picture_urls(site_url: str) -> dict[str, str]:
    base = f"{site_url}/theme/image.php/boost/core/1"
    return {"profileimageurlsmall": f"{base}/u/f2", "profileimageurl": f"{base}/u/f1"}


def user_details(
    state: SiteState,
    user: dict[str, Any],
    *,
    site_url: str,
    show_names: bool,
    show_email: bool,
    admin_fields: bool,
    trackforums: bool,
    courseid: int | None = None,
) -> dict[str, Any]:
    """user_get_user_details() as the recordings show it (040, 101): empty optional fields are left out."""
    out: dict[str, Any] = {"id": user["id"], "username": user["username"]}
    if show_names:
        out["firstname"], out["lastname"] = user["firstname"], user["lastname"]
    out["fullname"] = fullname(user)
    if show_email:
        out["email"] = user["email"]
    out["department"] = user["department"]
    if user["idnumber"]:
        out["idnumber"] = user["idnumber"]
    out["firstaccess"], out["lastaccess"] = user["firstaccess"], user["lastaccess"]
    if courseid is not None:
        out["lastcourseaccess"] = 0
    if admin_fields:  # shown to a caller with moodle/user:update (get_users_by_field)
        for key in ("auth", "suspended", "confirmed", "lang", "theme", "timezone", "mailformat"):
            out[key] = user[key]
        if trackforums:
            out["trackforums"] = 0
    for key in ("city", "country"):
        if user[key]:
            out[key] = user[key]
    out.update(picture_urls(site_url))
    if courseid is not None:
        ue = state.enrolments[(user["id"], courseid)]
        out["roles"] = [
            {"roleid": r, "name": "", "shortname": ROLES.get(r, f"role{r}"), "sortorder": 0} for r in ue["roles"]
        ]
        enrolled = [state.courses[c] for c in state.user_course_ids(user["id"]) if listed_course(state, user["id"], c)]
        if enrolled:
            out["enrolledcourses"] = [
                {"id": c["id"], "fullname": c["fullname"], "shortname": c["shortname"]} for c in enrolled
            ]
    return out


def listed_course(state: SiteState, userid: int, courseid: int) -> bool:
    """enrol_get_users_courses(onlyactive): active enrolments, hidden courses only for roles that may see them.

    The check is on the enrolled user's capability (moodle/course:viewhiddencourses), not the caller's: a learner
    enrolled in a hidden course does not get it listed (130 leaves out the hidden CT-C1).
    """
    course = state.courses.get(courseid)
    if not course or not state.is_active_enrolment(userid, courseid):
        return False
    return bool(course["visible"]) or bool(TEACHER_ROLES & set(state.enrolments[(userid, courseid)]["roles"]))


def course_image(site_url: str, course: dict[str, Any]) -> str:
    return f"{site_url}/pluginfile.php/{course['id'] + 10}/course/generated/course.svg"


def course_details(state: SiteState, course: dict[str, Any], site_url: str) -> dict[str, Any]:
    """One course of core_course_get_courses_by_field (067)."""
    category = state.categories.get(course["category"], {})
    contacts = [
        {"id": uid, "fullname": fullname(state.users[uid])}
        for uid in state.course_users(course["id"])
        if CONTACT_ROLES & set(state.enrolments[(uid, course["id"])]["roles"]) and state.live_user(uid)
    ]
    out: dict[str, Any] = {
        "id": course["id"],
        "fullname": course["fullname"],
        "displayname": course["fullname"],
        "shortname": course["shortname"],
        "courseimage": course_image(site_url, course),
        "categoryid": course["category"],
        "categoryname": category.get("name", ""),
        "sortorder": course["sortorder"],
        "summary": course["summary"],
        "summaryformat": course["summaryformat"],
        "summaryfiles": [],
        "overviewfiles": [],
        "showactivitydates": course["showactivitydates"],
        "showcompletionconditions": True,
        "contacts": contacts,
        "enrollmentmethods": ["manual"],
    }
    for key in ("idnumber", "format", "showgrades", "newsitems", "startdate", "enddate", "maxbytes", "showreports"):
        out[key] = course[key]
    for key in ("visible", "groupmode", "groupmodeforce", "defaultgroupingid", "enablecompletion", "completionnotify"):
        out[key] = course[key]
    for key in ("lang", "theme", "marker", "legacyfiles", "calendartype", "timecreated", "timemodified", "requested"):
        out[key] = course[key]
    out["cacherev"] = course["cacherev"]
    out["filters"] = [{"filter": f, "localstate": 0, "inheritedstate": 1} for f in COURSE_FILTERS]
    out["courseformatoptions"] = [
        {"name": "hiddensections", "value": course["hiddensections"]},
        {"name": "coursedisplay", "value": course["coursedisplay"]},
        {"name": "indentation", "value": "1"},
    ]
    return out


def category_details(state: SiteState, category: dict[str, Any]) -> dict[str, Any]:
    """One category of core_course_get_categories (050)."""
    out = {
        k: category[k] for k in ("id", "name", "idnumber", "description", "descriptionformat", "parent", "sortorder")
    }
    out["coursecount"] = sum(1 for c in state.courses.values() if c["category"] == category["id"])
    out.update({k: category[k] for k in ("visible", "visibleold", "timemodified", "depth", "path", "theme")})
    return out


def completion_row(state: SiteState, userid: int, courseid: int) -> dict[str, Any]:
    return state.completions.setdefault((userid, courseid), {"criteria": {}, "timecompleted": None})


def completion_status(state: SiteState, userid: int, courseid: int) -> dict[str, Any]:
    """core_completion_get_course_completion_status answer (120, 124, 125)."""
    row = completion_row(state, userid, courseid)
    completions = []
    for ctype in state.courses[courseid]["criteria"]:
        done = row["criteria"].get(ctype)
        completions.append(
            {
                "type": ctype,
                "title": "Self completion",
                "status": "Yes" if done else "No",
                "complete": bool(done),
                "timecompleted": done,
                "details": {
                    "type": "Self completion",
                    "criteria": "Self completion",
                    "requirement": "Marking yourself complete",
                    "status": "",
                },
            }
        )
    status = {"completed": row["timecompleted"] is not None, "aggregation": 1, "completions": completions}
    return {"completionstatus": status, "warnings": []}


def users_course(
    state: SiteState, userid: int, course: dict[str, Any], site_url: str, usercount: bool
) -> dict[str, Any]:
    """One course of core_enrol_get_users_courses (130)."""
    row = state.completions.get((userid, course["id"]), {"timecompleted": None})
    completed = row["timecompleted"] is not None
    tracked = bool(course["enablecompletion"]) and state.is_tracked(userid, course["id"])
    out: dict[str, Any] = {
        "id": course["id"],
        "shortname": course["shortname"],
        "fullname": course["fullname"],
        "displayname": course["fullname"],
    }
    if usercount:
        out["enrolledusercount"] = sum(
            1 for uid in state.course_users(course["id"]) if state.is_active_enrolment(uid, course["id"])
        )
    out.update(
        {
            "idnumber": course["idnumber"],
            "visible": course["visible"],
            "summary": course["summary"],
            "summaryformat": course["summaryformat"],
            "format": course["format"],
            "courseimage": course_image(site_url, course),
            "showgrades": bool(course["showgrades"]),
            "lang": course["lang"],
            "enablecompletion": bool(course["enablecompletion"]),
            "completionhascriteria": bool(course["criteria"]),
            "completionusertracked": tracked,
            "category": course["category"],
            # Progress comes from activity completion; the fake only knows "completed" (100) or not (0).
            "progress": (100 if completed else 0) if course["enablecompletion"] else OMITTED,
            "completed": completed,
            "startdate": course["startdate"],
            "enddate": course["enddate"],
            "marker": course["marker"],
            "lastaccess": None,
            "isfavourite": False,
            "hidden": False,
            "overviewfiles": [],
            "showactivitydates": course["showactivitydates"],
            "showcompletionconditions": True,
            "timemodified": course["timemodified"],
        }
    )
    return out
