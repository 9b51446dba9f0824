"""`moodle-sync check`: what the configured Moodle token can and cannot do, in words an admin can act on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.coursesales.errors import CourseSalesError, CourseSalesTransientError
from app.moodle.client import MoodleClient
from app.moodle.errors import MoodleError, MoodleTransientError
from app.settings import CoursesSettings
from app.sync import upstreams
from app.sync.courses import field_id, map_categories
from app.upstream import UpstreamError

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
    fix: str | None = None  # what to do, when the message does not say it already (the console shows it)


def _fix(exc: UpstreamError) -> str | None:
    """The fix of an upstream-wide fault (app.sync.upstreams.FIX); a transient failure reads as unavailable."""
    fault = upstreams.fault_of(exc)
    state = fault.state if fault else upstreams.UNAVAILABLE if exc.transient else None
    return upstreams.FIX.get((exc.upstream, state)) if state else None


async def check_moodle(moodle: MoodleClient) -> list[Finding]:
    try:
        info = await moodle.site_info()
    except MoodleTransientError as exc:
        return [Finding("error", f"could not connect to Moodle at {moodle.url}: {exc}", _fix(exc))]
    except MoodleError as exc:
        return [Finding("error", f"Moodle refused core_webservice_get_site_info: {exc}", _fix(exc))]
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


async def check_coursesales_login(coursesales: Any) -> Finding:
    """The login alone, proved with a cheap read (the console's CourseSales tile asks no more)."""
    try:
        count = await coursesales.check_login()
    except CourseSalesTransientError as exc:
        return Finding("error", f"could not connect to CourseSales at {coursesales.url}: {exc}", _fix(exc))
    except CourseSalesError as exc:
        return Finding("error", f"CourseSales refused the login or the read: {exc}", _fix(exc))
    return Finding("ok", f"CourseSales login works ({count} course categories visible)")


async def check_coursesales(coursesales: Any, settings: CoursesSettings) -> list[Finding]:
    """Prove the CourseSales login with a cheap read and find the configured category fields."""
    login = await check_coursesales_login(coursesales)
    if login.level == "error":
        return [login]
    out = [login]
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
