"""The round-trip check's vocabulary: a step, its result, the report, the scratch objects' names and the context the
steps share (app/sync/round_trip.py runs them; round_trip_moodle.py and round_trip_coursesales.py define them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Final

from app.coursesales.api import CourseSalesApi
from app.moodle.client import MoodleClient
from app.settings import Settings
from app.sync.courses import CategoryMapping

# A step's status. Passing: ok, warn (works, with something to know), skipped (not used by this site's settings),
# assumed (cannot be proved through the API: an assumption). Not passing: failed, blocked (an earlier step failed).
OK, WARN, SKIPPED, ASSUMED, FAILED, BLOCKED = "ok", "warn", "skipped", "assumed", "failed", "blocked"
PASSING: Final = frozenset({OK, WARN, SKIPPED, ASSUMED})
KIND: Final = "round_trip"  # the kind of its rows in the runs table


class NotApplicable(Exception):
    """The step does not apply to this site's settings (no template configured, say): skipped, says why."""


class StepProblem(Exception):
    """A failure the step found itself (not an upstream's error): what was found, what it means, the fix."""

    def __init__(self, summary: str, meaning: str, fix: str | None = None) -> None:
        super().__init__(summary)
        self.summary, self.meaning, self.fix = summary, meaning, fix


@dataclass(frozen=True)
class Done:
    """What a step that ran says: ok, or warn (it works, with a point to act on)."""

    summary: str
    status: str = OK
    meaning: str | None = None
    fix: str | None = None


@dataclass(frozen=True)
class StepResult:
    """One line of the report."""

    name: str
    upstream: str  # moodle | coursesales
    call: str  # the function or operation the step makes
    status: str
    summary: str  # ok: what it did; else the upstream's answer, or why it did not run
    meaning: str | None = None  # what the answer means for the sync
    fix: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status in PASSING


@dataclass
class Report:
    """The whole check: each step's line, the Moodle release, and why it did not start when it did not."""

    started_at: datetime
    finished_at: datetime
    steps: list[StepResult] = field(default_factory=list)
    moodle_release: str | None = None
    moodle_version: str | None = None
    refused: str | None = None  # why it did not start (or stopped at its first call)
    refused_code: str | None = None  # busy | unavailable | maintenance | not_configured
    run_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.refused is None and bool(self.steps) and all(s.passed for s in self.steps)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.steps:
            out[s.status] = out.get(s.status, 0) + 1
        return out

    def first_problem(self) -> str | None:
        if self.refused:
            return self.refused
        bad = next((s for s in self.steps if s.status == FAILED), None)
        return f"{bad.name}: {bad.meaning or bad.summary}" if bad else None

    def steps_json(self) -> list[dict[str, Any]]:
        return [asdict(s) for s in self.steps]


@dataclass(frozen=True)
class ScratchNames:
    """The check's own Moodle objects, all named from moodle.scratch_prefix; never a number (course date ids are)."""

    prefix: str

    @property
    def username(self) -> str:
        return f"{self.prefix}-user"

    @property
    def user_idnumber(self) -> str:
        return f"{self.prefix}-user"

    @property
    def email(self) -> str:
        return f"{self.prefix}@example.invalid"

    @property
    def course(self) -> str:  # short name and idnumber alike
        return f"{self.prefix}-course"

    @property
    def copy(self) -> str:
        return f"{self.prefix}-copy"


@dataclass
class Ctx:
    """What the steps share: the clients, the settings, and what earlier steps found or made."""

    settings: Settings
    moodle: MoodleClient
    coursesales: CourseSalesApi | None  # None: not configured
    names: ScratchNames
    release: str | None = None
    version: str | None = None
    mapping: CategoryMapping | None = None  # the mapped category the scratch courses go in
    user: dict[str, Any] | None = None
    user_id: int | None = None
    course_id: int | None = None
    template_id: int | None = None
    copy_id: int | None = None
    copy_idnumber: str = ""  # as found or made: empty until the copy.idnumber step sets it
    copy_ready: bool = False  # the copy has its idnumber and dates: it is used like a course of the sync


@dataclass(frozen=True)
class Step:
    """One kind of call the sync makes, done once on scratch objects; ``needs``: the steps it cannot run without."""

    name: str
    upstream: str
    call: str
    run: Callable[[Ctx], Awaitable[Done]]
    needs: tuple[str, ...] = ()
    slow: bool = False  # a course duplication: the duplicate timeout, not the call timeout
