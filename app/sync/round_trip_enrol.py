"""The round-trip check's enrolment and completion steps, on the scratch user in the scratch course (and the copy, once
it has its idnumber): enrol, read back, read completion and the user's courses, suspend, unenrol; the user is left
suspended. The calls and their items are the sync's own (app/sync/enrolments.py, registrations.py)."""

from __future__ import annotations

from app.moodle.client import ItemResult
from app.moodle.errors import MoodleError
from app.sync.round_trip_model import Ctx, Done, StepProblem
from app.sync.round_trip_moodle import refused_update, scratch_dates

NO_CRITERIA = "nocriteriaset"


def _courses(ctx: Ctx) -> list[int]:
    assert ctx.course_id is not None
    return [ctx.course_id] + ([ctx.copy_id] if ctx.copy_ready and ctx.copy_id is not None else [])


def _shown(ctx: Ctx) -> str:
    return " and ".join(f"course {c}" for c in _courses(ctx))


def _raise_refused(results: list[ItemResult[None]]) -> None:
    for res in results:
        if res.error is not None:
            raise res.error


def _items(ctx: Ctx, **extra: int) -> list[dict[str, int]]:
    assert ctx.user_id is not None
    start, end = scratch_dates(ctx)
    role = ctx.settings.enrolments.role_id
    return [
        {"roleid": role, "userid": ctx.user_id, "courseid": c, "timestart": start, "timeend": end, **extra}
        for c in _courses(ctx)
    ]


async def enrol(ctx: Ctx) -> Done:
    _raise_refused(await ctx.moodle.enrol_users(_items(ctx)))
    role = ctx.settings.enrolments.role_id
    return Done(f"enrolled the scratch user in {_shown(ctx)} as role {role} (enrolments.role_id), with dates")


async def enrolled_read(ctx: Ctx) -> Done:
    for course_id in _courses(ctx):
        listed = {int(u["id"]) for u in await ctx.moodle.get_enrolled_users(course_id)}
        if ctx.user_id not in listed:
            raise StepProblem(
                f"the scratch user is not among course {course_id}'s participants Moodle lists to the token",
                "the reconcile would take every enrolment as missing and send it again",
                "give the role moodle/course:viewparticipants and moodle/course:enrolreview",
            )
    return Done(f"the scratch user is listed among the participants of {_shown(ctx)}")


async def completion_read(ctx: Ctx) -> Done:
    """In the copy when there is one (a template's completion criteria); a course without criteria still proves the
    call and report/completion:view: Moodle checks them before it answers nocriteriaset."""
    assert ctx.user_id is not None
    course_id = _courses(ctx)[-1]
    try:
        status = await ctx.moodle.completion_status(course_id=course_id, user_id=ctx.user_id)
    except MoodleError as exc:
        if exc.errorcode != NO_CRITERIA:
            raise
        return Done(f"course {course_id} has no completion criteria (nocriteriaset): the call and its capability work")
    return Done(f"read the scratch user's completion in course {course_id}: completed {bool(status.get('completed'))}")


async def users_courses(ctx: Ctx) -> Done:
    assert ctx.user_id is not None
    listed = await ctx.moodle.users_courses(ctx.user_id)
    return Done(f"read the scratch user's courses: {len(listed)} listed (hidden courses are not listed to a student)")


async def enrol_suspend(ctx: Ctx) -> Done:
    """A cancelled registration under enrolments.unenrol_action "suspend": the same enrolment, suspended."""
    _raise_refused(await ctx.moodle.enrol_users(_items(ctx, suspend=1)))
    return Done(f"suspended the scratch user's enrolment in {_shown(ctx)}")


async def unenrol(ctx: Ctx) -> Done:
    assert ctx.user_id is not None
    _raise_refused(await ctx.moodle.unenrol_users([{"userid": ctx.user_id, "courseid": c} for c in _courses(ctx)]))
    return Done(f"unenrolled the scratch user from {_shown(ctx)}")


async def user_suspend(ctx: Ctx) -> Done:
    """Left suspended between runs (as the sync suspends an inactive contact's user)."""
    assert ctx.user_id is not None
    warnings = await ctx.moodle.update_users([{"id": ctx.user_id, "suspended": 1}])
    refused_update(warnings.get(ctx.user_id), "core_user_update_users")
    return Done(f"suspended the scratch user (id {ctx.user_id}) until the next run")
