"""Course dates -> Moodle courses: eligibility, category mapping, naming, dates, and the plan for one course."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from app.settings import CoursesSettings


class CategoryLike(Protocol):
    """A course category as map_categories reads it (read-only: CourseSales' records are frozen)."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def parent_id(self) -> int | None: ...
    @property
    def form_id(self) -> int | None: ...
    @property
    def fields(self) -> dict[int, str]: ...


class FieldLike(Protocol):
    """A category form's field, as field_id matches it by name."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...


class CourseDateLike(Protocol):
    """A course date as CourseSales lists it or as we keep it (CourseDateRow): what a course plan reads."""

    @property
    def id(self) -> int: ...
    @property
    def start(self) -> date | None: ...
    @property
    def end(self) -> date | None: ...
    @property
    def status_id(self) -> int | None: ...
    @property
    def visibility(self) -> int | None: ...
    @property
    def category_id(self) -> int | None: ...
    @property
    def category_name(self) -> str | None: ...


@dataclass(frozen=True)
class CategoryMapping:
    """Where a CourseSales course category goes in Moodle, or why it cannot."""

    category_id: int
    name: str
    moodle_category_id: int | None = None
    template: str | None = None
    inherited_from: int | None = None
    problem: str | None = None


def field_id(
    forms: Mapping[int, Mapping[int, FieldLike]], form_id: int | None, *, explicit: int | None, name: str
) -> int | None:
    """The form field holding a setting: the configured id, else the field of that name in the category's form."""
    if explicit is not None:
        return explicit
    for fid, f in (forms.get(form_id) or {}).items() if form_id is not None else ():
        if f.name.strip().lower() == name.strip().lower():
            return fid
    return None


def map_categories(
    categories: Sequence[CategoryLike], forms: Mapping[int, Mapping[int, FieldLike]], settings: CoursesSettings
) -> dict[int, CategoryMapping]:
    """Each CourseSales category -> its Moodle category (own field, else the nearest ancestor's) and template."""
    by_id = {c.id: c for c in categories}

    def own(c: CategoryLike, explicit: int | None, name: str) -> str:
        fid = field_id(forms, c.form_id, explicit=explicit, name=name)
        return (c.fields.get(fid) or "").strip() if fid is not None else ""

    out: dict[int, CategoryMapping] = {}
    for c in categories:
        node: CategoryLike | None = c
        seen: set[int] = set()
        moodle_value = template = ""
        source: int | None = None
        while node is not None and node.id not in seen:
            seen.add(node.id)
            moodle_value = moodle_value or own(node, settings.category_field_id, settings.category_field_name)
            template = template or own(node, settings.template_field_id, settings.template_field_name)
            if moodle_value:
                source = node.id
                break
            if not settings.inherit_category_mapping:
                break
            node = by_id.get(node.parent_id) if node.parent_id else None
        if not moodle_value:
            out[c.id] = CategoryMapping(c.id, c.name, template=template or None, problem=_unmapped(c, settings))
        elif not moodle_value.isdigit():
            out[c.id] = CategoryMapping(
                c.id,
                c.name,
                problem=f"category {c.name!r} ({c.id}): Moodle Category Id {moodle_value!r} is not a number",
            )
        else:
            out[c.id] = CategoryMapping(
                c.id, c.name, int(moodle_value), template or None, inherited_from=source if source != c.id else None
            )
    return out


def _unmapped(c: CategoryLike, settings: CoursesSettings) -> str:
    where = (
        f"field {settings.category_field_id}"
        if settings.category_field_id
        else f"field {settings.category_field_name!r}"
    )
    also = " nor in any parent category" if settings.inherit_category_mapping else ""
    return f"course category {c.name!r} ({c.id}) has no Moodle category: {where} is empty there{also}"


def eligibility(cd: CourseDateLike, settings: CoursesSettings) -> str | None:
    """None when the course date belongs in Moodle, else why not."""
    if cd.status_id not in settings.scheduled_status_ids:
        return f"course date {cd.id} is not scheduled (StatusId {cd.status_id})"
    if cd.visibility not in settings.public_visibility_ids:
        return f"course date {cd.id} is not public (Visibility {cd.visibility})"
    return None


def course_names(cd: CourseDateLike, category_name: str, settings: CoursesSettings) -> tuple[str, str]:
    """(fullname, shortname) by the naming standard; the course date id keeps short names unique."""
    fullname = category_name
    if settings.naming == "category_and_date" and cd.start:
        return fullname, f"{category_name} {cd.id} {cd.start.isoformat()}"
    return fullname, f"{category_name} {cd.id}"


def course_times(cd: CourseDateLike, settings: CoursesSettings) -> tuple[int, int]:
    """(startdate, enddate) as Unix times: the start day's midnight and the end of the (inclusive) end day."""
    zone = ZoneInfo(settings.timezone)
    start = int(datetime.combine(cd.start, time(0), zone).timestamp()) if cd.start else 0
    end = int(datetime.combine(cd.end + timedelta(days=1), time(0), zone).timestamp()) - 1 if cd.end else 0
    return start, end


@dataclass
class CoursePlan:
    """What to do for one course date."""

    action: str  # create | duplicate | adopt | update | none | skip
    reason: str = ""
    course: dict[str, Any] = field(default_factory=dict)
    moodle_course_id: int | None = None
    template: str | None = None


def plan_course(
    cd: CourseDateLike,
    mapping: CategoryMapping | None,
    existing: Mapping[str, Any] | None,
    *,
    linked: bool,
    settings: CoursesSettings,
) -> CoursePlan:
    """Decide create / duplicate / adopt / update for one course date given Moodle's course with its idnumber."""
    why_not = eligibility(cd, settings)
    name = (mapping.name if mapping else None) or cd.category_name or f"Course date {cd.id}"
    fullname, shortname = course_names(cd, name, settings)
    start, end = course_times(cd, settings)
    if existing is None:
        if why_not:
            return CoursePlan("skip", why_not)
        if not settings.auto_create:
            return CoursePlan("skip", f"courses.auto_create is off and no Moodle course has idnumber {cd.id}")
        if mapping is None:
            return CoursePlan(
                "skip",
                f"course date {cd.id}: its course category {cd.category_id} is not in CourseSales' category list",
            )
        if mapping.problem or mapping.moodle_category_id is None:
            return CoursePlan("skip", mapping.problem or "no Moodle category")
        course = {
            "fullname": fullname,
            "shortname": shortname,
            "categoryid": mapping.moodle_category_id,
            "idnumber": str(cd.id),
            "startdate": start,
            "enddate": end,
            "visible": 1,
        }
        if mapping.template:
            return CoursePlan("duplicate", "new course date, from template", course, template=mapping.template)
        return CoursePlan("create", "new course date", course)
    changes: dict[str, Any] = {}
    if settings.name_sync == "both":
        if existing.get("fullname") != fullname:
            changes["fullname"] = fullname
        if existing.get("shortname") != shortname:
            changes["shortname"] = shortname
    if start and int(existing.get("startdate") or 0) != start:
        changes["startdate"] = start
    if end and int(existing.get("enddate") or 0) != end:
        changes["enddate"] = end
    visible = 0 if why_not and cd.status_id not in settings.scheduled_status_ids else 1
    if int(existing.get("visible", 1)) != visible:
        changes["visible"] = visible
    action = "update" if changes else ("adopt" if not linked else "none")
    reason = why_not or ("hand-linked course adopted" if not linked else "")
    return CoursePlan(action, reason, changes, moodle_course_id=int(existing["id"]))
