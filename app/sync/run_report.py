"""A reconcile run's report (its plan, counts and status), and the base of the phases that add to it."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import structlog

from app.db.engine import SessionFactory
from app.moodle.client import MoodleClient
from app.settings import Settings

log = structlog.get_logger(__name__)


class Stop(Exception):
    """A guard tripped: the run stops and alerts instead of acting."""


@dataclass
class Report:
    status: str = "done"
    plan: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error: str | None = None

    def add(self, action: str, reason: str, **target: Any) -> None:
        """A plan entry: what the run does (a dry run: would do), why, and to what."""
        self.plan.append({"action": action, "reason": reason, **target})
        self.counts[f"plan.{action}"] += 1

    def failed(self, reason: str, **target: Any) -> None:
        """A repair Moodle refused: in the plan, in the run's counts, and in the log above info (an alert follows)."""
        self.add("error", reason, **target)
        self.counts["failed"] += 1
        log.warning("reconcile.repair_failed", reason=reason, **target)


@dataclass
class Phase:
    """One part of a reconcile run: what it reads and changes, and the report it adds to."""

    sessions: SessionFactory
    moodle: MoodleClient
    settings: Settings
    report: Report
