"""Every guess about the CourseSales API in one place; docs/coursesales-assumptions.md lists how to check each."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# -- transport ---------------------------------------------------------------------------------------------------

# The guide's endpoint is `<base>/rest/index?<JSON>`; the base URL (scheme included) is a setting.
REST_PATH = "/rest/index"
# The guide shows GET for reads and for process steps; we assume every call (registrations too) is a GET.
HTTP_METHOD = "GET"
# The JSON is percent-encoded whole (no character left raw) so that `&`, `=`, `#` and `+` inside values survive;
# the guide shows the JSON "raw after ?", which a server decoding the query string reads the same way.
QUERY_SAFE_CHARS = ""
# Compact JSON (no spaces) keeps the URL short; the server is assumed not to care about whitespace.
JSON_SEPARATORS = (",", ":")

# -- paging ------------------------------------------------------------------------------------------------------

FIRST_PAGE = 1  # `page` is 1-based in the guide's example.
# The guide's example sends pageItemLimit as a string ("1"); we do the same.
PAGE_ITEM_LIMIT_AS_STRING = True
# A page with fewer records than pageItemLimit (none at all included) is the last one.
LAST_PAGE_WHEN_SHORT = True
# The guide's example asked for pageItemLimit "1" and got two course categories: Options may not be paged at all.
# A page with MORE records than asked for is therefore taken as the whole, unpaged list.
MORE_THAN_LIMIT_MEANS_UNPAGED = True
# A page made only of records already seen means the server ignores `page`: stop instead of looping.
STOP_WHEN_PAGE_REPEATS = True
# Safety bound against a server that never sends a short page (200 per page x 10,000 pages = 2 million records).
MAX_PAGES = 10_000
# An answer that is entirely empty (`[]` or `{}`, PHP's json_encode of an empty array) means "no records".
# Any other answer lacking the part we asked for is an unexpected answer, not an empty list: a silently failed
# read must never look like "CourseSales has no course dates" (the sync would then hide every Moodle course).
EMPTY_ANSWER_MEANS_NO_RECORDS = True
# The login check reads one page of category names; its answer must contain the "Options" part, even when the
# account has no category, otherwise the login cannot be confirmed.
LOGIN_CHECK_REQUIRES_SECTION = True

# -- reading -----------------------------------------------------------------------------------------------------

# Documented in the guide (Options): the option type of course categories and the two detail levels.
OPTION_TYPE_COURSE_CATEGORY = "Course Category"
OPTION_DETAIL_NAMES = "Names"
OPTION_DETAIL_ALL = "All"
# With "All", the form definitions arrive in this sibling of the records (seen in the guide's example answer).
COURSE_CATEGORY_FORMS_KEY = "Course Category Forms"
# Form field definitions are read through their named keys, not through a meta map (the example has none).
FORM_FIELD_NAME_KEY = "FieldName"
FORM_FIELD_LABEL_KEY = "FieldLabel"
FORM_FIELD_TYPE_KEY = "FieldType"
# A top-level category (OptionDepth 1) names the option type's root node as its parent (4281 in the example, which
# is not a category): depth 1 means "no parent". A parent id of 0 or empty also means "no parent".
TOP_LEVEL_DEPTH = 1
# The Moodle plugins' course-date listing (documented), read through the meta map named "<type> meta".
COURSE_DATE_TYPE = "CourseDateListNextId"
COURSE_DATE_SERVICE_TYPE = "Moodle Course Date Id"
META_SUFFIX = " meta"
# Dates CourseSales writes for "no date" (MySQL's zero date); they decode to None.
NULL_DATES = frozenset({"", "0000-00-00", "0000-00-00 00:00:00"})
# The codes for "scheduled" and "public" are not published; the example shows StatusId 1 and Visibility 2.
# They belong in the sync's settings; these are the defaults those settings should take.
SCHEDULED_STATUS_ID = 1
PUBLIC_VISIBILITY = 2
# The course-date listing has no column for the course master's visibility (the example's meta map has none), and no
# read of one course master is known. The guide says Options list only the categories of a Scheduled, public course
# date on an Active course master: the diagnosis (app/sync/diagnose_links.py) takes a course date's category missing
# from that list as its course master not public or not active, and a listed one as public (the list does not say
# which course master of the category made it listed). False: the diagnosis says it cannot check the course master.
COURSE_MASTER_PUBLIC_WHEN_CATEGORY_LISTED = True

# -- error answers -----------------------------------------------------------------------------------------------

# How an error answer looks is not published. We assume a JSON object with one of these top-level keys (any case)
# holding a non-empty text (or a list / an object of texts), or a bare JSON string.
ERROR_KEYS = frozenset({"error", "errors", "message", "errormessage"})
# An error text mentioning one of these words is a failed login.
LOGIN_ERROR_WORDS = ("login", "username", "password", "credential", "authenticat", "not authori")
# HTTP statuses that mean the login was refused (should CourseSales use HTTP statuses at all).
LOGIN_ERROR_HTTP_STATUSES = frozenset({401, 403})
# HTTP 429 means the server refused to process the call now: transient, and certainly not applied.
TOO_MANY_REQUESTS_STATUS = 429

# -- writing -----------------------------------------------------------------------------------------------------

# Process step (documented): {"Status": {"StatusTableName": "Documents"}, "DocumentExternalId", "StatusStepId"}.
STEP_TABLE_NAME = "Documents"
# The answer to a step is not documented: any answer that is not an error answer means the step ran, unless one of
# these top-level keys holds an explicit false ("false", 0, False).
STEP_RESULT_KEYS = ("Status", "Success", "Result")
FALSE_VALUES = frozenset({"false", "0", "no", "failed", "failure"})
# No read of a process path or of its steps is known (the guide documents executing a step, not listing them), and
# executing one has an effect (the certificate is sent): the round-trip check (app/sync/round_trip_coursesales.py)
# cannot confirm that completion.process_step_id exists, so it lists this assumption instead. True once a read is
# known (and written in the client).
PROCESS_STEPS_READABLE = False

# The registration request shape is not published (only its settings are: form id, process path id, process step
# id, field ids). Our guess mirrors the documented step call and the category form content ({field id: value}).
REGISTRATION_PART = "Documents"
REGISTRATION_FORM_KEY = "FormId"
REGISTRATION_PATH_KEY = "ProcessPathId"
REGISTRATION_STEP_KEY = "StatusStepId"
REGISTRATION_CONTENT_KEY = "DocumentContent"
# Where the answer names the new Document: the first of these keys found at the top level or one level down.
REGISTRATION_ID_KEYS = ("DocumentExternalId", "DocumentExternalReferenceId", "ExternalId")


def registration_payload(
    *, form_id: int, process_path_id: int, process_step_id: int, fields: Mapping[int, str]
) -> dict[str, Any]:
    """The (assumed) request that creates a registration Document; login is added by the client."""
    return {
        REGISTRATION_PART: {
            REGISTRATION_FORM_KEY: form_id,
            REGISTRATION_PATH_KEY: process_path_id,
            REGISTRATION_STEP_KEY: process_step_id,
            REGISTRATION_CONTENT_KEY: {str(field_id): value for field_id, value in fields.items()},
        }
    }


def registration_document_id(answer: Mapping[str, Any]) -> str | None:
    """The new Document's external id, wherever the (assumed) answer names it; None when it does not."""
    candidates: list[Mapping[str, Any]] = [answer]
    candidates.extend(v for v in answer.values() if isinstance(v, Mapping))
    for part in candidates:
        for key in REGISTRATION_ID_KEYS:
            value = part.get(key)
            if value not in (None, "", 0):
                return str(value)
    return None


def error_text(answer: Any) -> str | None:
    """The error an answer carries, or None when it looks like data."""
    if isinstance(answer, str):
        return answer or "empty error text"
    if not isinstance(answer, Mapping):
        return None
    for key, value in answer.items():
        if str(key).lower() in ERROR_KEYS:
            text = _flatten_text(value)
            if text:
                return text
    return None


def is_login_error(text: str) -> bool:
    """Whether an error text speaks of the login."""
    lowered = text.lower()
    return any(word in lowered for word in LOGIN_ERROR_WORDS)


def step_refusal(answer: Mapping[str, Any]) -> str | None:
    """Why a process-step answer says the step did not run, or None when it ran."""
    for key in STEP_RESULT_KEYS:
        value = answer.get(key)
        if value is False or (isinstance(value, (str, int)) and str(value).strip().lower() in FALSE_VALUES):
            return f"{key} is {value!r}"
    return None


def _flatten_text(value: Any) -> str:
    if value in (None, False, "", 0):
        return ""
    if isinstance(value, Mapping):
        return "; ".join(t for t in (_flatten_text(v) for v in value.values()) if t)
    if isinstance(value, (list, tuple)):
        return "; ".join(t for t in (_flatten_text(v) for v in value) if t)
    if value is True:
        return "error"
    return str(value)
