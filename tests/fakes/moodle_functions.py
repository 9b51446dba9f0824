"""Site, user, category and course functions of the Moodle fake (enrolments: moodle_enrol.py).

Each handler gets the fake (for its state and flags) and the validated parameters, and returns the answer or raises
MoodleException. Checks run in Moodle's order so that a request with several faults fails like Moodle does.
Batch calls that Moodle wraps in one transaction (create_users, create_courses, create_categories, enrol, unenrol)
stage their changes and apply them only when every item passed: all-or-nothing, with ids still burnt (065 -> 081).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tests.fakes.moodle_protocol import (
    OMITTED,
    MoodleException,
    invalid_param,
    moodle_error,
)
from tests.fakes.moodle_state import (
    category_details,
    course_details,
    fullname,
    new_category,
    new_course,
    new_user,
    now,
)

if TYPE_CHECKING:
    from tests.fakes.moodle import MoodleFake


# -- shared checks --------------------------------------------------------------------------------------------------

EMAIL_RE = re.compile(
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$",
    re.IGNORECASE,
)

# lang/en/auth.php strings, in the order check_password_policy() appends them.
PASSWORD_RULES: list[tuple[Callable[[str], bool], str]] = [
    (lambda p: len(p) >= 8, "Passwords must be at least 8 characters long."),
    (lambda p: sum(c.isdigit() for c in p) >= 1, "Passwords must have at least 1 digit(s)."),
    (lambda p: sum(c.islower() for c in p) >= 1, "Passwords must have at least 1 lower case letter(s)."),
    (lambda p: sum(c.isupper() for c in p) >= 1, "Passwords must have at least 1 upper case letter(s)."),
    (
        lambda p: sum(not (c.isdigit() or c.islower() or c.isupper()) for c in p) >= 1,
        "The password must have at least 1 special character(s) such as *, -, or #.",
    ),
]


def password_errors(password: str) -> str:
    """The site's policy text for ``password``: one <div> per failed rule, '' when it passes."""
    return "".join(f"<div>{text}</div>" for ok, text in PASSWORD_RULES if not ok(password))


def check_password(password: str) -> None:
    errors = password_errors(password)
    if errors:
        raise moodle_error(errors)


def missing_record(fake: MoodleFake, table: str, sql: str, value: Any) -> MoodleException:
    """dml_missing_record_exception: table-specific codes on 4.3 (and 5.0 with debugging), generic on 5.0."""
    shown = repr(value) if isinstance(value, str) else str(value)
    debuginfo = f"{sql}\n[array (\n  0 => {shown},\n)]"
    if fake.is_v5 and not fake.debug:
        return MoodleException(
            "dml_missing_record_exception", "invalidrecordunknown", "Can't find data record in database."
        )
    if table == "user":
        return MoodleException("dml_missing_record_exception", "invaliduser", "Invalid user", debuginfo)
    return MoodleException(
        "dml_missing_record_exception", "invalidrecord", f"Can't find data record in database table {table}.", debuginfo
    )


def get_course(fake: MoodleFake, courseid: int) -> dict[str, Any]:
    course = fake.state.courses.get(courseid)
    if course is None:
        raise missing_record(fake, "course", "SELECT * FROM {course} WHERE id = ?", courseid)
    return course


def require_active_user(fake: MoodleFake, userid: int) -> dict[str, Any]:
    """5.0's core_user::get_user(MUST_EXIST) + require_active_user() in enrol/unenrol (DIFF REPORT C)."""
    user = fake.state.users.get(userid)
    if user is None:
        raise missing_record(fake, "user", "SELECT * FROM {user} WHERE id = ?", userid)
    if user["deleted"]:
        raise moodle_error("userdeleted")
    if not user["confirmed"]:
        raise moodle_error("usernotconfirmed", f"Could not confirm {user['username']}")
    if userid == 1:
        raise moodle_error("guestsarenotallowed", "The guest user is not allowed to do this")
    return user


# -- site info ------------------------------------------------------------------------------------------------------


def site_info(fake: MoodleFake, params: dict[str, Any]) -> dict[str, Any]:
    bot = fake.state.users[fake.token_userid]
    features = ["usecomments", "usetags", "enablenotes", "messaging", "enableblogs", "enablecompletion", "enablebadges"]
    advanced = [{"name": n, "value": 1} for n in features]
    advanced += [{"name": n, "value": 0} for n in ("messagingallusers",)]
    advanced += [{"name": "enablecustomreports", "value": 1}]
    advanced += [{"name": n, "value": 0} for n in ("enableglobalsearch", "mnet_dispatcher_mode")]
    if fake.is_v5:
        advanced.append({"name": "enablecompetencies", "value": 1})
    info: dict[str, Any] = {
        "sitename": fake.sitename,
        "username": bot["username"],
        "firstname": bot["firstname"],
        "lastname": bot["lastname"],
        "fullname": fullname(bot),
        "lang": "en",
        "userid": bot["id"],
        "siteurl": fake.site_url,
        "userpictureurl": f"{fake.site_url}/theme/image.php/boost/core/1/u/f1",
        "functions": [{"name": f, "version": fake.function_version(f)} for f in fake.functions],
        "downloadfiles": 0,
        "uploadfiles": 0,
        "release": fake.release,
        "version": fake.site_version,
        "mobilecssurl": "",
        "advancedfeatures": advanced,
        "usercanmanageownfiles": True,
        "userquota": 104857600,
        "usermaxuploadfilesize": 2097152,
        "userhomepage": 1,
    }
    if fake.is_v5:
        info["userhomepageurl"] = OMITTED
    info.update(
        {
            "userprivateaccesskey": "fakeprivateaccesskey",
            "siteid": 1,
            "sitecalendartype": "gregorian",
            "usercalendartype": "gregorian",
            "userissiteadmin": fake.token_is_siteadmin,
            "theme": "boost",
            "limitconcurrentlogins": 0,
            "usersessionscount": OMITTED,
        }
    )
    if fake.is_v5:
        info["policyagreed"] = 0
    return info


# -- users ----------------------------------------------------------------------------------------------------------


def _email_taken(fake: MoodleFake, email: str, exclude: int | None = None) -> bool:
    lowered = email.lower()
    return any(
        u["email"].lower() == lowered and u["id"] != exclude and not u["deleted"] for u in fake.state.users.values()
    )


def create_users(fake: MoodleFake, params: dict[str, Any]) -> list[dict[str, Any]]:
    staged: list[dict[str, Any]] = []
    # Gathered once a call, not once an item: a batch of 100 into a site of 10,000 users was the benchmark's
    # largest CPU cost (the state only changes after every item has passed).
    usernames = {u["username"] for u in fake.state.users.values()}
    emails = {u["email"].lower() for u in fake.state.users.values() if not u["deleted"]}
    for item in params["users"]:
        for key in ("username", "firstname", "lastname"):
            if item[key].strip() == "":
                raise invalid_param(f"The field {key} cannot be blank")
        if item["username"] in usernames:
            raise invalid_param(f"Username already exists: {item['username']}")
        if item["auth"] not in ("manual", "nologin", "email"):
            raise invalid_param(f"Invalid authentication type: {item['auth']}")
        if not item.get("password") and not item.get("createpassword"):
            raise invalid_param("Invalid password: you must provide a password, or set createpassword.")
        if not EMAIL_RE.match(item["email"]):
            raise invalid_param(f"Email address is invalid: {item['email']}")
        if item["email"].lower() in emails:
            raise invalid_param(f"Email address already exists: {item['email']}")
        if not item.get("createpassword"):
            check_password(item.get("password", ""))
        fields = {k: v for k, v in item.items() if k != "createpassword" and v is not None}
        staged.append(new_user(fake.state.next_id("user"), **fields))
        usernames.add(item["username"])
        emails.add(item["email"].lower())
    for user in staged:
        fake.state.users[user["id"]] = user
    return [{"id": u["id"], "username": u["username"]} for u in staged]


def _update_one_user(fake: MoodleFake, item: dict[str, Any]) -> None:
    user = fake.state.users.get(item["id"])
    if user is None:
        raise moodle_error("invaliduserid", "Invalid user ID")
    if user["id"] == 2:
        raise moodle_error("useradminodelete")
    if user["deleted"]:  # a warning, nothing applied (154)
        raise moodle_error("usernotupdateddeleted")
    if user["id"] == 1:
        raise moodle_error("guestuser")
    email = item.get("email")
    if email is not None and email != user["email"]:
        if not EMAIL_RE.match(email):
            raise moodle_error("useremailinvalid")
        if _email_taken(fake, email, exclude=user["id"]):
            raise moodle_error("useremailduplicate")
    if "password" in item:
        check_password(item["password"])
    username = item.get("username")
    if username and any(u["username"] == username and u["id"] != user["id"] for u in fake.state.users.values()):
        # The unique index on (mnethostid, username) refuses the write.
        raise MoodleException("dml_write_exception", "dmlwriteexception", "Error writing to database")
    changes = {k: v for k, v in item.items() if k not in ("id", "userpicture")}
    if "suspended" in changes:
        changes["suspended"] = bool(changes["suspended"])
    user.update(changes)
    user["timemodified"] = now()


def update_users(fake: MoodleFake, params: dict[str, Any]) -> dict[str, Any]:
    warnings = []
    for item in params["users"]:
        try:  # each user in its own transaction: a bad item becomes a warning, the others are applied
            _update_one_user(fake, item)
        except MoodleException as exc:
            warnings.append(
                {"item": "user", "itemid": item["id"], "warningcode": exc.errorcode, "message": exc.message}
            )
    for warning in warnings:
        # clean_returnvalue(): warningcode is PARAM_ALPHANUM, so the HTML policy text breaks the whole answer
        # after the good items were committed (032, 038/039).
        if not re.fullmatch(r"[a-zA-Z0-9]*", warning["warningcode"]):
            raise MoodleException(
                "invalid_response_exception",
                "invalidresponse",
                "Invalid response value detected",
                "warnings => Invalid response value detected: warningcode => Invalid response value detected: "
                f'Invalid external api response: the value is "{warning["warningcode"]}" of PHP type "string", '
                'the server was expecting "alphanum" type',
            )
    return {"warnings": warnings}


def _clean_lookup(field: str, value: str) -> Any:
    if field == "id":
        cleaned: Any = int(value) if re.fullmatch(r"\s*-?\d+\s*", value) else 0
        ok = re.fullmatch(r"\s*-?\d+(\.0*)?\s*", value) is not None and cleaned == int(float(value))
    elif field == "username":
        cleaned = re.sub(r"[^-.@_a-z0-9]", "", value.strip().lower())
        ok = cleaned == value
    elif field == "email":
        cleaned = value.strip()
        ok = cleaned == value
    else:
        cleaned, ok = value, True
    if not ok:
        raise invalid_param(f"The field '{field}' value is invalid: {value}(cleaned value: {cleaned})")
    return cleaned


def get_users_by_field(fake: MoodleFake, params: dict[str, Any]) -> list[dict[str, Any]]:
    field = params["field"]
    if field not in ("id", "idnumber", "username", "email"):
        raise MoodleException(
            "coding_exception",
            "codingerror",
            "Coding error detected, it must be fixed by a programmer: invalid field parameter",
            f"The search field '{field}' is not supported, look at the web service documentation",
        )
    wanted = {_clean_lookup(field, v) for v in params["values"]}
    found = []
    # No "deleted" filter: get_records_list('user', $field, ...). A deleted user is found by its id, renamed (150),
    # and not by its old username or email, which delete_user() replaced (151, 152).
    for uid in sorted(fake.state.users):
        user = fake.state.users[uid]
        if user[field] not in wanted:
            continue
        details = fake.user_details(user, admin_fields=True)
        # Moodle drops matches whose searched field the caller may not see (043).
        if details.get(field):
            found.append(details)
    return found


# -- categories -----------------------------------------------------------------------------------------------------

CATEGORY_KEYS = frozenset({"id", "ids", "name", "parent", "idnumber", "visible", "theme"})


def get_categories(fake: MoodleFake, params: dict[str, Any]) -> list[dict[str, Any]]:
    cats = sorted(fake.state.categories.values(), key=lambda c: c["sortorder"])
    selected = cats
    for crit in params["criteria"]:
        key, value = crit["key"], crit["value"]
        if key not in CATEGORY_KEYS:
            raise invalid_param(f"The key {key} is not a valid category key")
        if key == "ids":
            ids = {v.strip() for v in value.split(",")}
            selected = [c for c in selected if str(c["id"]) in ids]
        else:
            selected = [c for c in selected if str(c[key] if c[key] is not None else "") == str(value)]
    if params["criteria"] and params["addsubcategories"]:
        paths = [c["path"] + "/" for c in selected]
        ids = {c["id"] for c in selected}
        selected = [c for c in cats if c["id"] in ids or any(c["path"].startswith(p) for p in paths)]
    return [category_details(fake.state, c) for c in selected]


def create_categories(fake: MoodleFake, params: dict[str, Any]) -> list[dict[str, Any]]:
    staged: list[dict[str, Any]] = []
    for item in params["categories"]:
        parent = item["parent"]
        known = {**fake.state.categories, **{c["id"]: c for c in staged}}
        if parent and parent not in known:
            raise moodle_error("unknowcategory", "Category not known!")
        if not item["name"].strip():
            raise moodle_error("categorynamerequired", "The category name is required")
        idnumber = item.get("idnumber")
        if idnumber and any(c["idnumber"] == idnumber for c in known.values()):
            raise moodle_error("categoryidnumbertaken", "ID number is already used for another category")
        catid = fake.state.next_id("category")
        path = (known[parent]["path"] if parent else "") + f"/{catid}"
        sortorder = max(c["sortorder"] for c in known.values()) + 10000
        extra = {k: item[k] for k in ("description", "descriptionformat", "theme") if item.get(k) is not None}
        staged.append(new_category(catid, item["name"], parent, path, sortorder, idnumber=idnumber or None, **extra))
    for cat in staged:
        fake.state.categories[cat["id"]] = cat
    return [{"id": c["id"], "name": c["name"]} for c in staged]


# -- courses --------------------------------------------------------------------------------------------------------


def _check_course_unique(courses: list[dict[str, Any]], item: dict[str, Any], exclude: int | None = None) -> None:
    others = [c for c in courses if c["id"] != exclude]
    if item.get("shortname") and any(c["shortname"] == item["shortname"] for c in others):
        raise moodle_error("shortnametaken", f"Short name is already used for another course ({item['shortname']})")
    if item.get("idnumber") and any(c["idnumber"] == item["idnumber"] for c in others):
        raise moodle_error("courseidnumbertaken", f"ID number is already used for another course ({item['idnumber']})")
    start, end = item.get("startdate"), item.get("enddate")
    if end and start is not None and end < start:
        raise moodle_error("enddatebeforestartdate", "The course end date must be after the start date.")


def _course_fields(item: dict[str, Any]) -> dict[str, Any]:
    fields = {k: v for k, v in item.items() if v is not None and k not in ("id", "categoryid", "numsections")}
    for fmt_option in fields.pop("courseformatoptions", None) or []:
        if fmt_option["name"] in ("hiddensections", "coursedisplay"):
            fields[fmt_option["name"]] = int(fmt_option["value"])
    fields.pop("customfields", None)
    if "forcetheme" in fields:
        fields["theme"] = fields.pop("forcetheme")
    if item.get("categoryid") is not None:
        fields["category"] = item["categoryid"]
    return fields


def create_courses(fake: MoodleFake, params: dict[str, Any]) -> list[dict[str, Any]]:
    staged: list[dict[str, Any]] = []
    for item in params["courses"]:
        if item["categoryid"] not in fake.state.categories:
            raise moodle_error(
                "errorcatcontextnotvalid",
                f"You cannot execute functions in the category context (category id:{item['categoryid']}). "
                "The context error message was: Invalid parameter value detected",
            )
        _check_course_unique([*fake.state.courses.values(), *staged], item)
        fields = {**fake.state.course_defaults, **_course_fields(item)}
        staged.append(new_course(fake.state.next_id("course"), **fields))
    for course in staged:
        # create_course() puts a new course first in its category; fix_course_sortorder() renumbers the others.
        cat = fake.state.categories[course["category"]]
        for other in fake.state.courses.values():
            if other["category"] == course["category"] and other["sortorder"]:
                other["sortorder"] += 1
        course["sortorder"] = cat["sortorder"] + 1
        fake.state.courses[course["id"]] = course
    return [{"id": c["id"], "shortname": c["shortname"]} for c in staged]


def _update_one_course(fake: MoodleFake, item: dict[str, Any]) -> None:
    course = get_course(fake, item["id"])
    _check_course_unique(list(fake.state.courses.values()), item, exclude=course["id"])
    categoryid = item.get("categoryid")
    if categoryid is not None and categoryid not in fake.state.categories:
        raise missing_record(fake, "course_categories", "SELECT * FROM {course_categories} WHERE id = ?", categoryid)
    course.update(_course_fields(item))
    course["timemodified"] = now()


def update_courses(fake: MoodleFake, params: dict[str, Any]) -> dict[str, Any]:
    warnings = []
    for item in params["courses"]:
        try:
            _update_one_course(fake, item)
        except MoodleException as exc:
            warnings.append(
                {"item": "course", "itemid": item["id"], "warningcode": exc.errorcode, "message": exc.message}
            )
    return {"warnings": warnings}


def get_courses_by_field(fake: MoodleFake, params: dict[str, Any]) -> dict[str, Any]:
    field, value = params["field"], params["value"]
    courses = sorted(fake.state.courses.values(), key=lambda c: c["id"])
    if field in ("id", "category"):
        key = "category" if field == "category" else "id"
        wanted = int(value) if re.fullmatch(r"-?\d+", str(value).strip()) else 0
        courses = [c for c in courses if c[key] == wanted]
    elif field == "ids":
        ids = {v.strip() for v in str(value).split(",")}
        courses = [c for c in courses if str(c["id"]) in ids]
    elif field in ("shortname", "idnumber"):
        courses = [c for c in courses if c[field] == value]
    elif field == "sectionid":
        courses = []
    elif field != "":
        raise invalid_param("Invalid field name")
    return {"courses": [course_details(fake.state, c, fake.site_url) for c in courses], "warnings": []}


BACKUP_OPTIONS = frozenset(
    {
        "activities",
        "blocks",
        "filters",
        "users",
        "enrolments",
        "role_assignments",
        "comments",
        "userscompletion",
        "logs",
        "grade_histories",
    }
)
# Settings that need moodle/backup:userinfo, which the token user lacks (080): setting them at all fails.
LOCKED_OPTIONS = frozenset({"users", "role_assignments", "comments", "userscompletion", "logs", "grade_histories"})


def duplicate_course(fake: MoodleFake, params: dict[str, Any]) -> dict[str, Any]:
    template = fake.state.courses.get(params["courseid"])
    if template is None:
        raise moodle_error("invalidcourseid", "You are trying to use an invalid course ID")
    if params["categoryid"] not in fake.state.categories:
        sql = "SELECT * FROM {course_categories} WHERE id = ?"
        raise missing_record(fake, "course_categories", sql, params["categoryid"])
    for option in params["options"]:
        raw = option["value"].strip()
        value = int(raw) if re.fullmatch(r"-?\d+", raw) else 0
        if value not in (0, 1) or option["name"] not in BACKUP_OPTIONS:
            raise moodle_error("invalidextparam", f"Invalid external api parameter: {option['name']}")
    same = [c["fullname"] for c in fake.state.courses.values() if c["shortname"] == params["shortname"]]
    if same:
        # Unlike create/update, the message names the existing courses' full names (082).
        raise moodle_error("shortnametaken", f"Short name is already used for another course ({','.join(same)})")
    if any(o["name"] in LOCKED_OPTIONS for o in params["options"]):
        raise MoodleException(
            "base_setting_exception", "setting_locked_by_permission", "error/setting_locked_by_permission"
        )
    copied = {k: v for k, v in template.items() if k not in ("id", "fullname", "shortname", "category", "visible")}
    copied.update(idnumber="", sortorder=0, timecreated=now(), timemodified=now(), criteria=list(template["criteria"]))
    course = new_course(
        fake.state.next_id("course"), params["fullname"], params["shortname"], params["categoryid"], **copied
    )
    course["visible"] = params["visible"]
    fake.state.courses[course["id"]] = course
    return {"id": course["id"], "shortname": course["shortname"]}
