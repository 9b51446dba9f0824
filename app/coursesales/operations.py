"""The request bodies of CourseSales' calls: which operation part to send, and the paging that follows it.

Their shape is what app/coursesales/assumptions.py assumes; the client adds the login and sends them.
"""

from __future__ import annotations

from typing import Any

from app.coursesales import assumptions as a
from app.coursesales.schemas import COURSE_DATES_PART, OPTIONS_PART


def options_operation(detail: str) -> dict[str, Any]:
    """The Options read of course categories, at detail "Names" or "All"."""
    return {OPTIONS_PART: {"OptionType": [a.OPTION_TYPE_COURSE_CATEGORY], "OptionSoapDetail": detail}}


def course_dates_operation() -> dict[str, Any]:
    """The Course Dates read the Moodle plugins use."""
    return {COURSE_DATES_PART: {"CourseDateType": [a.COURSE_DATE_TYPE], "ServiceType": a.COURSE_DATE_SERVICE_TYPE}}


def step_operation(document_external_id: str, step_id: int) -> dict[str, Any]:
    """The documented process-step call on a Document."""
    return {
        "Status": {"StatusTableName": a.STEP_TABLE_NAME},
        "DocumentExternalId": document_external_id,
        "StatusStepId": step_id,
    }


def paging(page: int, limit: int) -> dict[str, Any]:
    """The paging keys of a listing's page, sent after the operation."""
    return {"page": page, "pageItemLimit": str(limit) if a.PAGE_ITEM_LIMIT_AS_STRING else limit}


def is_last_page(count: int, limit: int) -> bool:
    """Whether a page of ``count`` records ends the listing (assumptions: short page, or an unpaged list)."""
    if a.LAST_PAGE_WHEN_SHORT and count < limit:
        return True
    return a.MORE_THAN_LIMIT_MEANS_UNPAGED and count > limit
