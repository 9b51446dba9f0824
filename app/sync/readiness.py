"""What an event waits for before it can run: an upstream that is not configured yet. Said on the event itself
(``waiting_for``), where the operator looks, not only in a log line repeated every minute."""

from __future__ import annotations

from app.settings import Settings

MOODLE_MISSING = "Moodle is not configured: set SYNC_MOODLE__URL and SYNC_MOODLE__TOKEN, then restart"
COURSESALES_MISSING = (
    "CourseSales is not configured: set SYNC_COURSESALES__URL, SYNC_COURSESALES__USERNAME and "
    "SYNC_COURSESALES__PASSWORD, then restart"
)
# Kinds whose work reads or writes CourseSales (course dates, process steps, registration forms).
COURSESALES_KINDS = frozenset(
    {
        "course_date.changed",
        "course.sync",
        "moodle.course_completed",
        "completion.pull",
        "moodle.user_enrolment_created",
    }
)


def waiting_for(settings: Settings, kind: str) -> str | None:
    """Why an event of ``kind`` cannot run yet, or None."""
    if not settings.moodle.configured:
        return MOODLE_MISSING
    if kind in COURSESALES_KINDS and not settings.coursesales.configured:
        return COURSESALES_MISSING
    return None


def unconfigured(settings: Settings) -> list[str]:
    """The upstreams not configured yet, by name (a reconcile needs both)."""
    return [name for name, ok in (("Moodle", settings.moodle.configured),
                                  ("CourseSales", settings.coursesales.configured)) if not ok]  # fmt: skip
