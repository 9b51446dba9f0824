"""Benchmark 3, reconcile with nothing to do: after a first sync of 10,000 contacts, 200 course dates and 20,000
registrations (all linked and enrolled), one real reconcile run (not a dry run) must make no Moodle write. Wall
time, Moodle calls by function, the run's peak memory, at 1x and at 10x the data; memory must stay flat.

The state is seeded directly: PostgreSQL by COPY, the fakes' tables in memory (the Moodle fake's enrolments indexed,
see IndexedEnrolments). The Moodle fake (served over HTTP, 20 ms + 0.5 ms per item a call, as benchmark 2) and the
CourseSales fake (no latency) run in this process; the reconcile runs in a child process of its own, so that its
memory and CPU are its own. Memory is the growth of the child's peak RSS over the run (Linux's VmHWM, reset at the
start); tracemalloc would slow the run down 2.5 times. A Moodle write is any function that is not a ``_get_``.

Every course date starts in the future: no completion can exist yet, so the completion pull has no candidates and
makes no Moodle call; its database walk over every learner is still measured.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from app.db.models import CourseDateRow
from app.runtime import build_runtime
from app.settings import CoursesSettings, Settings
from app.sync.courses import CategoryMapping, course_times, plan_course
from app.sync.reconcile import Reconciler
from bench.common import PG_URL, ROOT, service_env, table
from bench.fakes import Served
from tests.fakes.coursesales import CourseSalesFake
from tests.fakes.moodle import MoodleFake
from tests.fakes.moodle_state import SiteState, new_course, new_user

SCALES = tuple(int(n) for n in os.environ.get("BENCH_RECONCILE_SCALES", "1,10").split(","))
CONTACTS, COURSE_DATES, REGISTRATIONS, CATEGORIES = 10_000, 200, 20_000, 20
FIRST_USER, FIRST_COURSE, FIRST_DATE, FIRST_CATEGORY = 1000, 1000, 100_000, 500
FIRST_START = date.today() + timedelta(days=30)  # every course date in the future: no completion can exist yet
LATENCY, ITEM_LATENCY = 0.020, 0.0005
MOODLE_TOKEN, CS_USER, CS_PASSWORD, STEP = "bench-moodle", "BENCH", "bench-pass", 77
TABLES = ("attempts", "events", "completions", "registrations", "enrolment_links", "course_links", "course_dates")
TABLES += ("user_links", "leases", "runs")
ENROLMENT_COLUMNS = ("moodle_user_id", "moodle_course_id", "course_date_id", "document_external_id", "status")
ENROLMENT_COLUMNS += ("role_id", "timestart", "timeend", "created_at", "updated_at")


@dataclass(frozen=True)
class Data:
    """The first sync's outcome at ``scale``: contact c is Moodle user FIRST_USER + c, course date d is Moodle course
    FIRST_COURSE + d; registration r is contact r % contacts on course date r // (registrations / course dates)."""

    scale: int

    @property
    def contacts(self) -> int:
        return CONTACTS * self.scale

    @property
    def course_dates(self) -> int:
        return COURSE_DATES * self.scale

    @property
    def registrations(self) -> int:
        return REGISTRATIONS * self.scale

    def course_rows(self) -> list[CourseDateRow]:
        return [
            CourseDateRow(
                id=FIRST_DATE + d,
                category_id=FIRST_CATEGORY + d % CATEGORIES,
                category_name=f"Category {d % CATEGORIES}",
                start=FIRST_START + timedelta(days=d),
                end=FIRST_START + timedelta(days=d + 1),
                status_id=1,
                visibility=2,
            )
            for d in range(self.course_dates)
        ]

    def seats(self) -> Iterable[tuple[int, int, int]]:
        """(registration, contact, course date index) of every registration."""
        per_course = self.registrations // self.course_dates
        return ((r, r % self.contacts, r // per_course) for r in range(self.registrations))


# -- the fakes -------------------------------------------------------------------------------------------------------


class IndexedEnrolments(dict[tuple[int, int], dict[str, Any]]):
    """The Moodle fake's enrolments indexed by course and by user: the fake scans them all per lookup, which at this
    size would charge the run for the fake's own CPU rather than for Moodle's (modelled by its latency)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_course: dict[int, set[int]] = defaultdict(set)
        self.by_user: dict[int, set[int]] = defaultdict(set)

    def __setitem__(self, key: tuple[int, int], value: dict[str, Any]) -> None:
        super().__setitem__(key, value)
        self.by_course[key[1]].add(key[0])
        self.by_user[key[0]].add(key[1])

    def __delitem__(self, key: tuple[int, int]) -> None:
        super().__delitem__(key)
        self.by_course[key[1]].discard(key[0])
        self.by_user[key[0]].discard(key[1])

    def setdefault(self, key: tuple[int, int], default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def pop(self, key: tuple[int, int], *default: Any) -> Any:
        if key in self:
            value = self[key]
            del self[key]
            return value
        return super().pop(key, *default)


class IndexedState(SiteState):
    """A Moodle 5.0 site whose enrolment lookups use the indexes."""

    def __init__(self) -> None:
        super().__init__(showactivitydates=True)
        self.enrolments: IndexedEnrolments = IndexedEnrolments()

    def course_users(self, courseid: int) -> list[int]:
        return sorted(self.enrolments.by_course.get(courseid, ()))

    def user_course_ids(self, userid: int) -> list[int]:
        return sorted(self.enrolments.by_user.get(userid, ()))


def fakes(data: Data) -> tuple[MoodleFake, CourseSalesFake]:
    """The Moodle and CourseSales fakes holding what the first sync made."""
    courses = CoursesSettings()
    cs = CourseSalesFake(CS_USER, CS_PASSWORD, seed=False)
    moodle = MoodleFake("5.0", token=MOODLE_TOKEN)
    moodle.state = IndexedState()
    mappings = {}
    for i in range(CATEGORIES):
        cs.add_category(FIRST_CATEGORY + i, f"Category {i}", moodle_category_id=str(100 + i))
        mappings[FIRST_CATEGORY + i] = CategoryMapping(FIRST_CATEGORY + i, f"Category {i}", 100 + i)
    times = []
    for d, row in enumerate(data.course_rows()):
        cs.add_course_date(row.id, row.start, row.end, row.category_id)
        made = plan_course(row, mappings[row.category_id], None, linked=False, settings=courses).course
        cid = FIRST_COURSE + d
        moodle.courses[cid] = new_course(
            cid,
            made["fullname"],
            made["shortname"],
            made["categoryid"],
            **{k: made[k] for k in ("idnumber", "startdate", "enddate", "visible")},
        )
        times.append(course_times(row, courses))
    for c in range(data.contacts):
        uid = FIRST_USER + c
        moodle.users[uid] = new_user(uid, f"learner{c}", "Bench", f"Learner {c}", f"learner{c}@example.com")
    for _, c, d in data.seats():
        start, end = times[d]
        moodle.enrolments[(FIRST_USER + c, FIRST_COURSE + d)] = {
            "status": 0,
            "timestart": start,
            "timeend": end,
            "roles": [5],
            "timecreated": 0,
        }
    moodle.latency, moodle.item_latency = LATENCY, ITEM_LATENCY
    return moodle, cs


# -- the database ----------------------------------------------------------------------------------------------------


async def seed_database(data: Data) -> None:
    """Our tables as the first sync left them, written by COPY."""
    now = datetime.now(UTC)
    rows = data.course_rows()
    times = [course_times(row, CoursesSettings()) for row in rows]
    conn = await asyncpg.connect(PG_URL.replace("+asyncpg", ""))
    try:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
        await copy(
            conn,
            "user_links",
            ("contact_id", "username", "moodle_user_id", "suspended_by_sync", "created_at", "updated_at"),
            ((c + 1, f"learner{c}", FIRST_USER + c, False, now, now) for c in range(data.contacts)),
        )
        await copy(
            conn,
            "course_dates",
            ("id", "category_id", "category_name", "start", "end", "status_id", "visibility", "fetched_at"),
            ((r.id, r.category_id, r.category_name, r.start, r.end, 1, 2, now) for r in rows),
        )
        await copy(
            conn,
            "course_links",
            ("course_date_id", "moodle_course_id", "created_by_sync", "created_at", "updated_at"),
            ((FIRST_DATE + d, FIRST_COURSE + d, True, now, now) for d in range(data.course_dates)),
        )
        await copy(
            conn,
            "registrations",
            ("document_external_id", "course_date_id", "contact_key", "status", "created_at", "updated_at"),
            ((f"D-{r}", FIRST_DATE + d, f"contact:{c + 1}", "registered", now, now) for r, c, d in data.seats()),
        )
        await copy(
            conn,
            "enrolment_links",
            ENROLMENT_COLUMNS,
            (
                (FIRST_USER + c, FIRST_COURSE + d, FIRST_DATE + d, f"D-{r}", "active", 5, *times[d], now, now)
                for r, c, d in data.seats()
            ),
        )
        await conn.execute(f"ANALYZE {', '.join(TABLES)}")  # as autovacuum would have after a first sync
    finally:
        await conn.close()


async def copy(
    conn: asyncpg.Connection, table_name: str, columns: tuple[str, ...], records: Iterable[tuple[Any, ...]]
) -> None:
    # Every row is the default tenant's (the benchmarks run on it alone).
    rows = [(*record, 0) for record in records]
    await conn.copy_records_to_table(table_name, records=rows, columns=[*columns, "tenant_id"])


# -- the run, in a child process -------------------------------------------------------------------------------------


async def reconcile_once() -> dict[str, Any]:
    """One real reconcile with the settings of the environment: its wall time, peak memory and report."""
    settings = Settings()
    rt = build_runtime(settings)
    try:
        reconciler = Reconciler(sessions=rt.sessions, moodle=rt.moodle, coursesales=rt.coursesales, settings=settings)
        rss_before = memory_kib("VmRSS")
        reset_peak()
        started = time.perf_counter()
        report = await reconciler.run(dry_run=False)
        seconds = time.perf_counter() - started
        rss_growth = memory_kib("VmHWM") - rss_before
    finally:
        await rt.close()
    return {
        "seconds": seconds,
        "rss_growth_mb": rss_growth / 2**10,
        "status": report.status,
        "plan": len(report.plan),
        "counts": dict(report.counts),
    }


def reset_peak() -> None:
    """Linux: the peak RSS (VmHWM) starts again from the current RSS."""
    Path("/proc/self/clear_refs").write_text("5")


def memory_kib(field: str) -> int:
    """A memory figure of this process, from Linux's /proc."""
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {field} in /proc/self/status: the memory figure needs Linux")
    return int(match.group(1))


def child_env(moodle_url: str, coursesales_url: str) -> dict[str, str]:
    return service_env(
        SYNC_MOODLE__URL=moodle_url,
        SYNC_MOODLE__TOKEN=MOODLE_TOKEN,
        SYNC_COURSESALES__URL=coursesales_url,
        SYNC_COURSESALES__USERNAME=CS_USER,
        SYNC_COURSESALES__PASSWORD=CS_PASSWORD,
        SYNC_COMPLETION__PROCESS_STEP_ID=str(STEP),
        SYNC_RECONCILE__INTERVAL_MINUTES="0",
    )


# -- the parent ------------------------------------------------------------------------------------------------------


@dataclass
class Result:
    data: Data
    seed_seconds: float
    run: dict[str, Any]
    calls: Counter[str]

    @property
    def writes(self) -> int:
        return sum(n for f, n in self.calls.items() if "_get_" not in f)


def measure(scale: int) -> Result:
    data = Data(scale)
    started = time.perf_counter()
    moodle, cs = fakes(data)
    asyncio.run(seed_database(data))
    seed_seconds = time.perf_counter() - started
    with Served(moodle) as moodle_http, Served(cs) as cs_http:
        child = subprocess.run(
            [sys.executable, "-m", "bench.reconcile", "--child"],
            env=child_env(moodle_http.url, cs_http.url),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
    if child.returncode != 0:
        raise RuntimeError(f"the reconcile failed:\n{child.stderr[-4000:]}")
    run = json.loads(child.stdout.strip().splitlines()[-1])
    return Result(data, seed_seconds, run, Counter(f for f, _ in moodle.calls))


def row(r: Result) -> dict[str, Any]:
    d, run = r.data, r.run
    total = sum(r.calls.values())
    by_function = ", ".join(f"{n} {f}" for f, n in sorted(r.calls.items()))
    return {
        "benchmark": "reconcile, nothing to do",
        "case": f"{d.scale}x: {d.contacts:,} contacts, {d.course_dates:,} course dates, "
        f"{d.registrations:,} registrations",
        "req/s": f"{total / run['seconds']:.0f}",
        "p50 ms": "",
        "p99 ms": "",
        "errors": f"req/s = Moodle calls/s; run {run['seconds']:.1f} s, {r.writes} Moodle writes of {total} calls ({by_function}); "
        f"peak RSS +{run['rss_growth_mb']:.1f} MB over the run; "
        f"status {run['status']}, {run['plan']} plan entries; seeded in {r.seed_seconds:.0f} s",
    }


def growth(small: Result, big: Result) -> dict[str, Any]:
    def times(key: str) -> str:
        return f"x{big.run[key] / small.run[key]:.1f}"

    return {
        "benchmark": "reconcile, nothing to do",
        "case": f"growth {big.data.scale}x / {small.data.scale}x",
        "req/s": "",
        "p50 ms": "",
        "p99 ms": "",
        "errors": f"time {times('seconds')}, peak RSS growth {times('rss_growth_mb')}, "
        f"Moodle calls x{sum(big.calls.values()) / sum(small.calls.values()):.1f}",
    }


def run() -> list[dict[str, Any]]:
    subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"], env=service_env(), cwd=ROOT, check=True, capture_output=True
    )
    results = [measure(scale) for scale in SCALES]
    return [row(r) for r in results] + ([growth(results[0], results[-1])] if len(results) > 1 else [])


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        print(json.dumps(asyncio.run(reconcile_once())))
    else:
        print(table(run()))
