"""The round-trip check's Moodle steps for the site, the scratch user and the scratch courses: the client's own
methods, called as the sync calls them (app/sync/users.py, user_writes.py, course_sync.py), on objects named from
moodle.scratch_prefix. Each is made on the first run and found again on every later one (by username, idnumber or,
for a copy an interrupted run left without its idnumber, short name); nothing is ever deleted. Anything named like a
scratch object that the check did not make is refused, never taken over."""

from __future__ import annotations

import secrets
import string
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from app.checks import REQUIRED_FUNCTIONS
from app.moodle.errors import MoodleConflict, MoodlePermanentError
from app.settings import UsersSettings
from app.sync.contacts import password_failures
from app.sync.round_trip_explain import SERVICE_PAGE
from app.sync.round_trip_model import WARN, Ctx, Done, NotApplicable, StepProblem

NAME = "Moodle sync check"
COURSE_NAME = f"{NAME}: scratch course (do not use)"
COPY_NAME = f"{NAME}: scratch copy of a template (do not use)"
RENAME = "set another moodle.scratch_prefix (or rename that one)"


def scratch_password(rules: UsersSettings) -> str:
    """A fresh password meeting users.password_min_* (so a refusal shows Moodle's policy is stricter); never shown."""
    pools = [
        (string.digits, rules.password_min_digits),
        (string.ascii_lowercase, rules.password_min_lower),
        (string.ascii_uppercase, rules.password_min_upper),
        ("*-#!", rules.password_min_nonalphanum),
    ]
    chars = [secrets.choice(pool) for pool, n in pools for _ in range(max(1, n))]
    alphabet = string.ascii_letters + string.digits
    chars += [secrets.choice(alphabet) for _ in range(max(16, rules.password_min_length) - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    password = "".join(chars)
    assert not password_failures(password, rules)  # by construction
    return password


def scratch_dates(ctx: Ctx) -> tuple[int, int]:
    """Today's midnight and two days on, in courses.timezone: an enrolment active for the whole run."""
    zone = ZoneInfo(ctx.settings.courses.timezone)
    start = datetime.combine(datetime.now(zone).date(), time(0), zone)
    return int(start.timestamp()), int((start + timedelta(days=2)).timestamp()) - 1


async def site_info(ctx: Ctx) -> Done:
    info = await ctx.moodle.site_info()
    ctx.release, ctx.version = str(info.get("release") or ""), str(info.get("version") or "")
    said = f"Moodle {ctx.release} (version {ctx.version}) at {info.get('siteurl')}, token user {info.get('username')!r}"
    have = {f.get("name") for f in info.get("functions", [])}
    missing = [f for f in REQUIRED_FUNCTIONS if f not in have]
    meanings, fixes = [], []
    if missing:
        meanings.append(f"not in the token's service: {', '.join(missing)} (the steps calling them fail below)")
        fixes.append(f"add them ({SERVICE_PAGE})")
    if info.get("userissiteadmin"):
        meanings.append("the token's user is a site administrator: Moodle lets it overwrite other administrators")
        fixes.append("give the sync a user of its own, with the role the README lists")
    if meanings:
        return Done(said, WARN, "; ".join(meanings), "; ".join(fixes))
    return Done(said)


async def user_lookup(ctx: Ctx) -> Done:
    name = ctx.names.username
    found = await ctx.moodle.get_users_by_field("username", [name])
    if not found:
        return Done(f"no scratch user {name} yet: this run makes it")
    user = found[0]
    if user.get("idnumber") != ctx.names.user_idnumber:
        raise StepProblem(
            f"Moodle user {name} (id {user['id']}) has idnumber {user.get('idnumber')!r}, not {ctx.names.user_idnumber!r}",
            "that account is not the check's: the check never touches an account it did not make",
            RENAME,
        )
    ctx.user, ctx.user_id = user, int(user["id"])
    return Done(f"found scratch user {name} (id {ctx.user_id}), made by an earlier run: reused")


async def user_write(ctx: Ctx) -> Done:
    """Made on the first run, updated after (names, a new password, unsuspended), as the sync writes a contact."""
    names, password = ctx.names, scratch_password(ctx.settings.users)
    fields = {"firstname": NAME, "lastname": "Scratch user", "email": names.email}
    if ctx.user_id is None:
        new = {"username": names.username, "auth": ctx.settings.users.auth, "password": password, **fields}
        (made,) = await ctx.moodle.create_users([{**new, "idnumber": names.user_idnumber}])
        if made.error is not None:
            raise made.error
        assert made.value is not None  # a made item carries Moodle's answer
        ctx.user_id = int(made.value["id"])
        return Done(f"made scratch user {names.username} (id {ctx.user_id}), its password per users.password_min_*")
    warnings = await ctx.moodle.update_users([{"id": ctx.user_id, **fields, "password": password, "suspended": 0}])
    refused_update(warnings.get(ctx.user_id), "core_user_update_users")
    return Done(f"updated scratch user {names.username} (id {ctx.user_id}): names, a new password, unsuspended")


def refused_update(warning: dict[str, Any] | None, function: str) -> None:
    """An update Moodle answered with a warning was not applied: raised as its error, to be explained."""
    if warning is not None:
        raise MoodlePermanentError(
            str(warning.get("message") or warning.get("warningcode")),
            function=function,
            errorcode=str(warning.get("warningcode") or ""),
        )


async def update_course(ctx: Ctx, course_id: int, changes: dict[str, Any]) -> None:
    warnings = await ctx.moodle.update_courses([{"id": course_id, **changes}])
    refused_update(warnings.get(course_id), "core_course_update_courses")


async def course_lookup(ctx: Ctx) -> Done:
    found = await ctx.moodle.get_courses_by_field("idnumber", ctx.names.course)
    if not found:
        return Done(f"no scratch course with idnumber {ctx.names.course} yet: this run makes it")
    ctx.course_id = int(found[0]["id"])
    return Done(f"found scratch course {ctx.names.course} (id {ctx.course_id}), made by an earlier run: reused")


async def course_write(ctx: Ctx) -> Done:
    """Made hidden in the mapped category on the first run (as the sync makes a course date's), updated after."""
    assert ctx.mapping is not None and ctx.mapping.moodle_category_id is not None  # coursesales.categories chose it
    start, end = scratch_dates(ctx)
    where = f"Moodle category {ctx.mapping.moodle_category_id} (CourseSales category {ctx.mapping.name!r})"
    if ctx.course_id is None:
        course = {"fullname": COURSE_NAME, "shortname": ctx.names.course, "idnumber": ctx.names.course,
                  "categoryid": ctx.mapping.moodle_category_id, "startdate": start, "enddate": end, "visible": 0}  # fmt: skip
        (made,) = await ctx.moodle.create_courses([{**course, "enablecompletion": 1}])
        if made.error is not None:
            raise made.error
        assert made.value is not None  # a made item carries Moodle's answer
        ctx.course_id = int(made.value["id"])
        return Done(f"made scratch course {ctx.names.course} (id {ctx.course_id}) in {where}, hidden")
    await update_course(ctx, ctx.course_id, {"fullname": COURSE_NAME, "startdate": start, "enddate": end, "visible": 0})
    return Done(f"updated scratch course {ctx.names.course} (id {ctx.course_id}): name, dates, hidden")


async def template_lookup(ctx: Ctx) -> Done:
    template = ctx.mapping.template if ctx.mapping else None
    if not template:
        raise NotApplicable("no mapped course category names a template course: duplication is not used, not tried")
    found = await ctx.moodle.get_courses_by_field("id" if template.isdigit() else "shortname", template)
    if not found:
        raise StepProblem(
            f"template course {template!r} is not in Moodle",
            f"course dates of CourseSales category {ctx.mapping.name!r} will get no course" if ctx.mapping else "",
            "correct the template in CourseSales (a Moodle course id or short name)",
        )
    ctx.template_id = int(found[0]["id"])
    return Done(f"template {template!r} is Moodle course {ctx.template_id} ({found[0].get('shortname')})")


def copy_idnumbers(ctx: Ctx) -> tuple[str, str]:
    """The copy's two idnumbers: Moodle checks moodle/course:changeidnumber only on a change, so runs alternate."""
    return ctx.names.copy, ctx.names.copy + "-2"


async def copy_lookup(ctx: Ctx) -> Done:
    """By its short name: a copy an interrupted run made before setting its idnumber is found too."""
    found = await ctx.moodle.get_courses_by_field("shortname", ctx.names.copy)
    if not found:
        return Done(f"no scratch copy {ctx.names.copy} yet: this run makes it")
    copy = found[0]
    if copy.get("idnumber") not in ("", None, *copy_idnumbers(ctx)):
        raise StepProblem(
            f"course {ctx.names.copy} (id {copy['id']}) has idnumber {copy.get('idnumber')!r}",
            "that course is not the check's: the check never touches a course it did not make",
            RENAME,
        )
    ctx.copy_id, ctx.copy_idnumber = int(copy["id"]), str(copy.get("idnumber") or "")
    late = " (an interrupted run left it without its idnumber)" if not ctx.copy_idnumber else ""
    return Done(f"found scratch copy {ctx.names.copy} (id {ctx.copy_id}){late}: reused")


async def copy_duplicate(ctx: Ctx) -> Done:
    """The template duplicated with the configured options. Once the copy exists, Moodle is asked again: it checks
    the template, category, options and the backup and restore capabilities before it refuses the taken short name,
    so every run proves them without making a second course."""
    assert ctx.template_id is not None and ctx.mapping is not None and ctx.mapping.moodle_category_id is not None
    c = ctx.settings.courses
    options = {"activities": c.include_activities, "blocks": c.include_blocks, "filters": c.include_filters}
    shown = ", ".join(f"{k}={int(v)}" for k, v in options.items())
    try:
        copy = await ctx.moodle.duplicate_course(
            template_id=ctx.template_id, fullname=COPY_NAME, shortname=ctx.names.copy,
            category_id=ctx.mapping.moodle_category_id, visible=False, options=options,
        )  # fmt: skip
    except MoodleConflict:
        if ctx.copy_id is None:
            raise
        return Done(
            f"Moodle accepted the copy request (template {ctx.template_id}, {shown}, the capabilities to back up and "
            f"restore) up to the copy's short name, taken by the scratch copy (id {ctx.copy_id}): reused, none made"
        )
    ctx.copy_id, ctx.copy_idnumber = int(copy["id"]), ""
    return Done(f"copied template {ctx.template_id} into scratch copy {ctx.names.copy} (id {ctx.copy_id}), {shown}")


async def copy_idnumber(ctx: Ctx) -> Done:
    """What the sync does to a new copy (duplicate_course takes no idnumber or dates): set them, keep it hidden."""
    assert ctx.copy_id is not None
    first, second = copy_idnumbers(ctx)
    idnumber = second if ctx.copy_idnumber == first else first
    start, end = scratch_dates(ctx)
    await update_course(ctx, ctx.copy_id, {"idnumber": idnumber, "startdate": start, "enddate": end, "visible": 0})
    ctx.copy_idnumber, ctx.copy_ready = idnumber, True
    return Done(f"set idnumber {idnumber} and dates on the scratch copy (id {ctx.copy_id}), hidden")
