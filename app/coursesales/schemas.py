"""Typed CourseSales records and their decoding from column-indexed answers through the meta maps."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from app.coursesales import assumptions as a
from app.coursesales.errors import CourseSalesUnexpectedAnswer

# Column names as the guide's example meta maps spell them (facts; their numbers are read from each answer).
OPTION_ID, OPTION_NAME, OPTION_DEPTH = "OptionId", "OptionName", "OptionDepth"
OPTION_PARENT, OPTION_FORM, OPTION_CONTENT = "OptionParentId", "OptionFormId", "OptionContent"
DATE_ID, DATE_START, DATE_END = "CourseDateId", "CourseDateStart", "CourseDateEnd"
DATE_STATUS, DATE_VISIBILITY = "StatusId", "Visibility"
DATE_CATEGORY, DATE_CATEGORY_NAME = "CourseMasterCourseCategoryId", "CourseMasterDisplayCategoryName"
DATE_VENUE, DATE_PLACES = "CourseDateVenueId", "PlacesTotal"

OPTIONS_PART = "Options"
COURSE_DATES_PART = "Course Dates"


@dataclass(frozen=True, slots=True)
class CourseCategory:
    """A CourseSales course category (an Option of type "Course Category") with its form content."""

    id: int
    name: str
    parent_id: int | None = None
    depth: int | None = None
    form_id: int | None = None
    fields: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FormField:
    """One field of a course category form."""

    id: int
    name: str
    label: str
    type: str


@dataclass(frozen=True, slots=True)
class CourseDate:
    """A CourseSales course date as the Moodle listing gives it; ``raw`` holds every named column."""

    id: int
    start: date | None
    end: date | None
    status_id: int | None
    visibility: int | None
    category_id: int | None
    category_name: str | None
    venue_id: int | None
    places_total: int | None
    raw: dict[str, Any] = field(default_factory=dict)


# -- cells -------------------------------------------------------------------------------------------------------


def to_int(value: Any) -> int | None:
    """CourseSales sends numbers as strings ("4384"); empty and non-numeric cells are None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def to_date(value: Any) -> date | None:
    """ "2015-12-01" (or with a time) to a date; MySQL's zero date and garbage to None."""
    if value is None:
        return None
    text = str(value).strip()
    if text in a.NULL_DATES:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def to_text(value: Any) -> str | None:
    return None if value is None else str(value)


# -- columns -----------------------------------------------------------------------------------------------------


def column_map(meta: Any) -> dict[str, int]:
    """A meta map ({name: column}, numbers as ints or strings; or a list of names in order) as {name: int}."""
    if isinstance(meta, list):
        return {str(name): i for i, name in enumerate(meta)}
    if not isinstance(meta, Mapping):
        raise CourseSalesUnexpectedAnswer(f"meta map is a {type(meta).__name__}, not an object")
    columns: dict[str, int] = {}
    for name, number in meta.items():
        col = to_int(number)
        if col is None:
            raise CourseSalesUnexpectedAnswer(f"meta map gives column {name!r} no number")
        columns[str(name)] = col
    return columns


def cell(record: Any, column: int) -> Any:
    """One cell of a record that is an object keyed by column number ("1" or 1) or an array."""
    if isinstance(record, Mapping):
        if str(column) in record:
            return record[str(column)]
        return record.get(column)
    if isinstance(record, list):
        return record[column] if 0 <= column < len(record) else None
    raise CourseSalesUnexpectedAnswer(f"record is a {type(record).__name__}, not an object or array")


def records(collection: Any) -> list[Any]:
    """The records of a collection: an array of records or an object keyed by record id."""
    if collection is None:
        return []
    if isinstance(collection, Mapping):
        return list(collection.values())
    if isinstance(collection, list):
        return collection
    raise CourseSalesUnexpectedAnswer(f"record list is a {type(collection).__name__}")


def rows(collection: Any, meta: Any) -> Iterator[dict[str, Any]]:
    """Each record as {column name: value}, decoded through the meta map, never through fixed positions."""
    items = records(collection)
    if not items:
        return
    if meta is None:
        raise CourseSalesUnexpectedAnswer("records arrived without their meta map")
    columns = column_map(meta)
    for record in items:
        yield {name: cell(record, col) for name, col in columns.items()}


def find_meta(answer: Mapping[str, Any], part: str, kind: str) -> Any:
    """The meta map of ``part``/``kind``: inside the part ("CourseDateListNextId meta", Course Dates style) or
    as a top-level sibling ("Options meta": {"Course Category": ...}, Options style)."""
    section = answer.get(part)
    if isinstance(section, Mapping) and kind + a.META_SUFFIX in section:
        return section[kind + a.META_SUFFIX]
    sibling = answer.get(part + a.META_SUFFIX)
    if isinstance(sibling, Mapping):
        return sibling.get(kind)
    return None


def part_records(answer: Mapping[str, Any], part: str, kind: str) -> Any:
    """The collection ``answer[part][kind]``; a part that is present but empty (PHP's ``[]``) has none."""
    section = answer.get(part)
    if isinstance(section, Mapping):
        return section.get(kind)
    if section in (None, [], ""):
        return None
    raise CourseSalesUnexpectedAnswer(f"{part!r} part is a {type(section).__name__}")


def part_rows(answer: Mapping[str, Any], part: str, kind: str) -> Iterator[dict[str, Any]]:
    """Each record of ``answer[part][kind]`` as {column name: value}, through the meta map the answer gives it."""
    return rows(part_records(answer, part, kind), find_meta(answer, part, kind))


def require_part(answer: Mapping[str, Any], part: str) -> None:
    """An answer must contain the part asked for, unless it is entirely empty (assumption)."""
    if part in answer:
        return
    if not answer and a.EMPTY_ANSWER_MEANS_NO_RECORDS:
        return
    keys = ", ".join(sorted(str(k) for k in answer)[:5])
    raise CourseSalesUnexpectedAnswer(f"answer has no {part!r} part (keys: {keys})")


# -- records -----------------------------------------------------------------------------------------------------


def category_from_row(row: Mapping[str, Any]) -> CourseCategory:
    ident = to_int(row.get(OPTION_ID))
    if ident is None:
        raise CourseSalesUnexpectedAnswer(f"course category without a numeric {OPTION_ID}")
    depth = to_int(row.get(OPTION_DEPTH))
    parent = to_int(row.get(OPTION_PARENT)) or None
    if depth is not None and depth <= a.TOP_LEVEL_DEPTH:
        parent = None  # the option type's root node, not a category
    return CourseCategory(
        id=ident,
        name=to_text(row.get(OPTION_NAME)) or "",
        parent_id=parent,
        depth=depth,
        form_id=to_int(row.get(OPTION_FORM)) or None,
        fields=form_content(row.get(OPTION_CONTENT)),
    )


def form_content(content: Any) -> dict[int, str]:
    """{field id: value}; PHP sends an empty content as ``[]``."""
    if not isinstance(content, Mapping):
        return {}
    out: dict[int, str] = {}
    for key, value in content.items():
        field_id = to_int(key)
        if field_id is not None:
            out[field_id] = "" if value is None else str(value)
    return out


def course_date_from_row(row: Mapping[str, Any]) -> CourseDate:
    ident = to_int(row.get(DATE_ID))
    if ident is None:
        raise CourseSalesUnexpectedAnswer(f"course date without a numeric {DATE_ID}")
    return CourseDate(
        id=ident,
        start=to_date(row.get(DATE_START)),
        end=to_date(row.get(DATE_END)),
        status_id=to_int(row.get(DATE_STATUS)),
        visibility=to_int(row.get(DATE_VISIBILITY)),
        category_id=to_int(row.get(DATE_CATEGORY)) or None,
        category_name=to_text(row.get(DATE_CATEGORY_NAME)),
        venue_id=to_int(row.get(DATE_VENUE)) or None,
        places_total=to_int(row.get(DATE_PLACES)),
        raw=dict(row),
    )


def form_field(field_id: int, definition: Mapping[str, Any]) -> FormField:
    return FormField(
        id=field_id,
        name=to_text(definition.get(a.FORM_FIELD_NAME_KEY)) or "",
        label=to_text(definition.get(a.FORM_FIELD_LABEL_KEY)) or "",
        type=to_text(definition.get(a.FORM_FIELD_TYPE_KEY)) or "",
    )


# -- answers -----------------------------------------------------------------------------------------------------


def categories_from_answer(answer: Mapping[str, Any]) -> list[CourseCategory]:
    """The course categories of an Options answer, in the answer's order."""
    return [category_from_row(row) for row in part_rows(answer, OPTIONS_PART, a.OPTION_TYPE_COURSE_CATEGORY)]


def forms_from_answer(answer: Mapping[str, Any]) -> dict[int, dict[int, FormField]]:
    """{form id: {field id: FormField}} from the "Course Category Forms" part (OptionSoapDetail "All")."""
    section = answer.get(OPTIONS_PART)
    forms = section.get(a.COURSE_CATEGORY_FORMS_KEY) if isinstance(section, Mapping) else None
    out: dict[int, dict[int, FormField]] = {}
    if not isinstance(forms, Mapping):
        return out
    for form_key, fields in forms.items():
        form_id = to_int(form_key)
        if form_id is None or not isinstance(fields, Mapping):
            continue
        out[form_id] = {
            field_id: form_field(field_id, definition)
            for key, definition in fields.items()
            if (field_id := to_int(key)) is not None and isinstance(definition, Mapping)
        }
    return out


def course_dates_from_answer(answer: Mapping[str, Any]) -> list[CourseDate]:
    """The course dates of a Course Dates answer (CourseDateListNextId), in the answer's order."""
    return [course_date_from_row(row) for row in part_rows(answer, COURSE_DATES_PART, a.COURSE_DATE_TYPE)]
