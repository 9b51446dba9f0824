"""The round-trip check's CourseSales steps, read-only: the login, the course categories with their mapping field (and
the mapped category the scratch courses go in), a page of course dates, and the completion process step, which no
known read can confirm (app/coursesales/assumptions.py: PROCESS_STEPS_READABLE): listed as an assumption."""

from __future__ import annotations

from app.coursesales import assumptions
from app.coursesales.api import CourseSalesApi
from app.sync.courses import CategoryMapping, field_id, map_categories
from app.sync.round_trip_model import ASSUMED, Ctx, Done, NotApplicable, StepProblem

PAGE = 20  # course dates read: one page


def _api(ctx: Ctx) -> CourseSalesApi:
    if ctx.coursesales is None:
        raise StepProblem(
            "CourseSales is not configured",
            "the sync can read no course date and send no completion",
            "set SYNC_COURSESALES__URL, SYNC_COURSESALES__USERNAME and SYNC_COURSESALES__PASSWORD",
        )
    return ctx.coursesales


async def login(ctx: Ctx) -> Done:
    count = await _api(ctx).check_login()
    return Done(f"login works ({count} course categories on the first page)")


def _choose(mapping: dict[int, CategoryMapping]) -> CategoryMapping | None:
    """A mapped category for the scratch courses: one naming a template first, so that duplication is tried."""
    mapped = [m for m in mapping.values() if m.moodle_category_id is not None and not m.problem]
    mapped.sort(key=lambda m: (m.template is None, m.category_id))
    return mapped[0] if mapped else None


async def categories(ctx: Ctx) -> Done:
    rules = ctx.settings.courses
    found, forms = await _api(ctx).course_categories()
    ids = {field_id(forms, c.form_id, explicit=rules.category_field_id, name=rules.category_field_name) for c in found}
    fields = sorted(i for i in ids if i is not None)
    mapping = map_categories(found, forms, rules)
    ctx.mapping = _choose(mapping)
    named = rules.category_field_id or repr(rules.category_field_name)
    if ctx.mapping is None:
        where = f"field {', '.join(map(str, fields))}" if fields else f"no field {named} in the category forms"
        raise StepProblem(
            f"{len(found)} course categories, none mapped to a Moodle category ({where})",
            "no course date can get a Moodle course",
            f"in CourseSales, fill the {named} field of the course categories with Moodle category ids",
        )
    mapped = sum(1 for m in mapping.values() if m.moodle_category_id is not None and not m.problem)
    templated = sum(1 for m in mapping.values() if m.template and not m.problem)
    chosen = ctx.mapping
    return Done(
        f"{len(found)} course categories, {mapped} mapped (field {', '.join(map(str, fields))}), {templated} with a "
        f"template; scratch courses go in Moodle category {chosen.moodle_category_id} ({chosen.name!r})"
    )


async def course_dates(ctx: Ctx) -> Done:
    seen = []
    async for course_date in _api(ctx).iter_course_dates(page_size=PAGE):
        seen.append(course_date)
        if len(seen) >= PAGE:
            break  # one page: the next is not asked for
    if not seen:
        return Done("read the course dates: none listed (none scheduled and public yet?)")
    first = seen[0]
    return Done(
        f"read a page of course dates: {len(seen)} (first: {first.id}, starts {first.start}, "
        f"category {first.category_id})"
    )


async def completion_step(ctx: Ctx) -> Done:
    step = ctx.settings.completion.process_step_id
    if step is None:
        raise NotApplicable("completion.process_step_id is not set: completions are not sent to CourseSales")
    if not assumptions.PROCESS_STEPS_READABLE:
        return Done(
            f"process step {step} cannot be confirmed",
            ASSUMED,
            "CourseSales has no known read of process steps, and executing one sends the certificate "
            "(docs/coursesales-assumptions.md, 23): the first real completion is the proof",
            f"in CourseSales, check that step {step} is on the registrations' process path",
        )
    raise NotApplicable("no read of process steps is written yet")  # pragma: no cover - once the API has one
