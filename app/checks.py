"""`moodle-sync check`: what the configured Moodle token can and cannot do, in words an admin can act on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.coursesales.errors import CourseSalesError, CourseSalesTransientError
from app.moodle.client import MoodleClient
from app.moodle.errors import MoodleError, MoodleTransientError
from app.settings import CoursesSettings
from app.sync.courses import field_id, map_categories

# Every function the service calls; the token's external service must hold them all.
REQUIRED_FUNCTIONS = (
    "core_webservice_get_site_info",
    "core_user_create_users",
    "core_user_update_users",
    "core_user_get_users_by_field",
    "core_course_get_categories",
    "core_course_create_courses",
    "core_course_update_courses",
    "core_course_get_courses_by_field",
    "core_course_duplicate_course",
    "enrol_manual_enrol_users",
    "enrol_manual_unenrol_users",
    "core_enrol_get_enrolled_users",
    "core_enrol_get_users_courses",
    "core_completion_get_course_completion_status",
)
# Needed by the reconcile's completion pull only (which reports its own failure): the events' work goes on without.
RECONCILE_ONLY = frozenset({"core_enrol_get_users_courses"})


@dataclass(frozen=True)
class Finding:
    level: str  # "ok", "warn", "error"
    message: str


async def check_moodle(moodle: MoodleClient) -> list[Finding]:
    try:
        info = await moodle.site_info()
    except MoodleTransientError as exc:
        return [Finding("error", f"could not connect to Moodle at {moodle.url}: {exc}")]
    except MoodleError as exc:
        return [Finding("error", f"Moodle refused core_webservice_get_site_info: {exc}")]
    out = [Finding("ok", f"Moodle {info.get('release')} at {info.get('siteurl')}, token user {info.get('username')!r}")]
    if info.get("userissiteadmin"):
        out.append(
            Finding(
                "warn",
                "the token's user is a site administrator: Moodle then lets it overwrite other administrators' "
                "accounts (with users.adopt_existing on, an administrator's username in CourseSales would be "
                "adopted); give the sync a user of its own with the capabilities in the README instead",
            )
        )
    have = {f.get("name") for f in info.get("functions", [])}
    missing = [f for f in REQUIRED_FUNCTIONS if f not in have]
    if missing:
        out.append(Finding("error", "add these functions to the token's external service: " + ", ".join(missing)))
    else:
        out.append(Finding("ok", f"all {len(REQUIRED_FUNCTIONS)} functions are in the token's service"))
    try:
        me = await moodle.get_users_by_field("id", [int(info["userid"])])
    except MoodleError as exc:
        out.append(Finding("warn", f"could not read the token user back: {exc}"))
        return out
    if me and "firstname" not in me[0]:
        out.append(
            Finding(
                "warn",
                "Moodle hides first and last names from this token: give its role moodle/site:viewfullnames "
                "(needed to read names of users enrolled in Moodle)",
            )
        )
    return out


async def check_coursesales(coursesales: Any, settings: CoursesSettings) -> list[Finding]:
    """Prove the CourseSales login with a cheap read and find the configured category fields."""
    try:
        count = await coursesales.check_login()
    except CourseSalesTransientError as exc:
        return [Finding("error", f"could not connect to CourseSales at {coursesales.url}: {exc}")]
    except CourseSalesError as exc:
        return [Finding("error", f"CourseSales refused the login or the read: {exc}")]
    out = [Finding("ok", f"CourseSales login works ({count} course categories visible)")]
    try:
        categories, forms = await coursesales.course_categories()
    except CourseSalesError as exc:
        return [*out, Finding("error", f"could not read the course categories: {exc}")]
    for label, explicit, name in (
        ("Moodle category", settings.category_field_id, settings.category_field_name),
        ("template", settings.template_field_id, settings.template_field_name),
    ):
        ids = {field_id(forms, c.form_id, explicit=explicit, name=name) for c in categories}
        found = sorted(i for i in ids if i is not None)
        if found:
            out.append(Finding("ok", f"{label} field: {', '.join(map(str, found))}"))
        else:
            level = "error" if label == "Moodle category" else "warn"
            out.append(Finding(level, f"no {label} field ({explicit or repr(name)}) in the course category forms"))
    mapping = map_categories(categories, forms, settings)
    unmapped = [m.name for m in mapping.values() if m.problem]
    if unmapped:
        out.append(
            Finding("warn", f"{len(unmapped)} course categories have no Moodle category: {', '.join(unmapped[:10])}")
        )
    return out
