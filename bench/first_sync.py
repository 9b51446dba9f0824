"""Benchmark 2, first sync: 10,000 contacts, 200 course dates and 20,000 registrations (100 per course date, 2 per
contact) posted as signed webhooks by wrk at 32 connections, as fast as they are accepted, into an empty Moodle fake
that charges 20 ms per call plus 0.5 ms per item. Course dates are scheduled and public, their category is mapped
to Moodle category 1 with no template: blank courses (core_course_create_courses).

Measured: the wall time from the first delivery until every user, course and enrolment is in Moodle; when the last
delivery was stored and how long the effects took after it (whether ingest or sync bounds the wall time); Moodle
calls per user and per enrolment, by wsfunction as the fake counted them; the peak memory and CPU of the API and
worker processes; and the ratio to the fake's own minimum: every write at the largest batch, ``max_in_flight`` calls
at a time. The calls actually made are costed the same way, for the floor of our own call pattern.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import PG_URL, ROOT, api_and_worker, cpu_seconds, fresh_stores, service_env, write_signed_requests
from bench.fakes import Served

# BENCH_FIRST_SYNC_SCALE=0.1 runs a tenth of the load (a quick look); the figures are at 1.
SCALE = float(os.environ.get("BENCH_FIRST_SYNC_SCALE", "1"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
THREADS = 2
SCRIPT = Path(__file__).resolve().parent / "wrk_replay.lua"
# The sender stops when nothing new has been stored for this long (a refused delivery is never stored).
STALL_SECONDS = 15.0
LATENCY, ITEM_LATENCY = 0.020, 0.0005
# Past this, the run stops waiting and reports what reached Moodle (make bench runs four benchmarks in 10 min).
DEADLINE_SECONDS = float(os.environ.get("BENCH_FIRST_SYNC_DEADLINE", "170"))
PER_DATE = 100
FIRST_DATE, CATEGORY, MOODLE_CATEGORY = 300_000, 900, 1
DOMAIN = "firstsync.example"
PASSWORD = "S3cret!pass"
USER_FUNCTIONS = frozenset({"core_user_get_users_by_field", "core_user_create_users", "core_user_update_users"})
ENROL_FUNCTIONS = frozenset({"enrol_manual_enrol_users", "enrol_manual_unenrol_users", "core_enrol_get_enrolled_users"})


# -- the load ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    """How much a first sync carries: contacts, course dates, and 100 registrations per course date."""

    contacts: int
    course_dates: int

    @classmethod
    def scaled(cls, scale: float) -> Size:
        return cls(contacts=max(1, round(10_000 * scale)), course_dates=max(1, round(200 * scale)))

    @property
    def registrations(self) -> int:
        return self.course_dates * PER_DATE

    @property
    def deliveries(self) -> int:
        return self.contacts + self.course_dates + self.registrations


def contact(i: int) -> dict[str, Any]:
    return {
        "contact_id": i + 1,
        "username": f"Learner{i:05d}@{DOMAIN}",
        "firstname": "First",
        "lastname": f"Learner {i}",
        "email": f"learner{i:05d}@{DOMAIN}",
        "password": PASSWORD,
        "phone": "0400000000",
        "active": True,
    }


def deliveries(size: Size) -> Iterator[dict[str, Any]]:
    """Event bodies in the order a first sync sends them: contacts, course dates, registrations."""
    for i in range(size.contacts):
        yield {"type": "contact.upserted", "id": f"fs-c-{i}", "contact": contact(i)}
    for j in range(size.course_dates):
        yield {"type": "course_date.changed", "id": f"fs-d-{j}", "course_date_id": FIRST_DATE + j}
    for r in range(size.registrations):
        registration = {
            "document_external_id": f"FS-{r}",
            "course_date_id": FIRST_DATE + r // PER_DATE,
            "contact": contact(r % size.contacts),
        }
        yield {"type": "registration.registered", "id": f"fs-r-{r}", "registration": registration}


@dataclass
class Delivered:
    """What wrk reported, and when the first request left and the last delivery was stored (monotonic seconds)."""

    accepted: int
    refused: int
    p50_ms: float
    p99_ms: float
    first_sent: float
    last_accepted: float | None

    @property
    def rate(self) -> float:
        return self.accepted / (self.last_accepted - self.first_sent) if self.last_accepted else float("nan")


async def stored(engine: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM events WHERE source = 'coursesales'"))).scalar_one())


async def deliver_all(port: int, size: Size, deadline: float) -> Delivered:
    """wrk sends every signed delivery once over ``CONCURRENCY`` connections, each as soon as one is free; it is
    stopped once all are stored (or nothing new was stored for STALL_SECONDS: refused ones never are)."""
    from app.db.engine import make_engine

    path = ROOT / "var" / "bench" / "first-sync.req"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_signed_requests(path, deliveries(size), port)
    engine = make_engine(PG_URL)
    args = [f"-t{THREADS}", f"-c{CONCURRENCY}", f"-d{int(DEADLINE_SECONDS)}s", "--timeout", "30s", "-s", str(SCRIPT)]
    first_sent = time.monotonic()
    wrk = await asyncio.create_subprocess_exec(
        shutil.which("wrk") or "wrk",
        *args,
        f"http://127.0.0.1:{port}",
        "--",
        str(path),
        str(THREADS),
        stdout=asyncio.subprocess.PIPE,
    )
    last_accepted, count, progress = None, 0, time.monotonic()
    try:
        while time.monotonic() < deadline and time.monotonic() - progress < STALL_SECONDS:
            now, before, count = time.monotonic(), count, await stored(engine)
            if count >= size.deliveries:
                last_accepted = now
                break
            progress = now if count > before else progress
            # Each count walks the inbox (7 ms at 30,000 events): polled often, it was a load of the benchmark's own.
            await asyncio.sleep(0.25)
    finally:
        wrk.send_signal(signal.SIGINT)
        out, _ = await wrk.communicate()
        await engine.dispose()
        path.unlink()
    found = re.search(r"WRK_JSON (\{.*\})", out.decode())
    if found is None:
        raise RuntimeError(f"wrk printed no summary:\n{out.decode()}")
    stats = json.loads(found.group(1))
    refused = stats["refused"] + stats["socket_errors"]
    p50, p99 = stats["p50_us"] / 1000, stats["p99_us"] / 1000
    return Delivered(stats["accepted"], refused, p50, p99, first_sent, last_accepted)


# -- the fakes and the effects ----------------------------------------------------------------------------------


def moodle_fake() -> Any:
    from tests.fakes.moodle import MoodleFake

    fake = MoodleFake("5.0", token="bench-moodle")
    fake.latency, fake.item_latency = LATENCY, ITEM_LATENCY
    return fake


def coursesales_fake(size: Size) -> Any:
    """One course category mapped to Moodle category 1 (no template) and its course dates, all scheduled and public."""
    from tests.fakes.coursesales import CourseSalesFake

    fake = CourseSalesFake("BENCH", "bench-pass", seed=False)
    fake.add_category(CATEGORY, "First Sync", moodle_category_id=str(MOODLE_CATEGORY))
    start = date.today() + timedelta(days=30)
    for j in range(size.course_dates):
        day = start + timedelta(days=j)
        fake.add_course_date(FIRST_DATE + j, day, day + timedelta(days=1), CATEGORY, status_id=1, visibility=2)
    return fake


@dataclass
class Effects:
    """What has reached the Moodle fake, counted from its own tables."""

    users: int
    courses: int
    enrolments: int

    @classmethod
    def of(cls, fake: Any) -> Effects:
        users = sum(1 for u in list(fake.users.values()) if u["username"].endswith("@" + DOMAIN))
        ours = {c["id"] for c in list(fake.courses.values()) if str(c.get("idnumber", "")).isdigit()}
        enrolments = sum(1 for (_, cid), e in list(fake.enrolments.items()) if cid in ours and e["status"] == 0)
        return cls(users, len(ours), enrolments)

    def complete(self, size: Size) -> bool:
        return (self.users, self.courses, self.enrolments) == (size.contacts, size.course_dates, size.registrations)

    def describe(self) -> str:
        return f"{self.users} users, {self.courses} courses, {self.enrolments} enrolments"


@dataclass
class Watched:
    """When every effect was in Moodle (None: not by the deadline), and what was there then."""

    done_at: float | None
    effects: Effects


async def watch(fake: Any, size: Size, deadline: float) -> Watched:
    """Poll the fake until every effect is there or the deadline passes."""
    while time.monotonic() < deadline:
        now = time.monotonic()
        # Cheap counters first: the full count walks every enrolment.
        if len(fake.enrolments) >= size.registrations and len(fake.users) >= size.contacts:
            effects = Effects.of(fake)
            if effects.complete(size):
                return Watched(now, effects)
        await asyncio.sleep(0.1)
    return Watched(None, Effects.of(fake))


async def first_sync(port: int, moodle: Any, size: Size) -> tuple[Delivered, Watched]:
    deadline = time.monotonic() + DEADLINE_SECONDS
    watcher = asyncio.create_task(watch(moodle, size, deadline))
    delivered = await deliver_all(port, size, deadline)
    return delivered, await watcher


# -- set-up and figures -----------------------------------------------------------------------------------------


def sync_env(moodle_url: str, coursesales_url: str) -> dict[str, str]:
    return service_env(
        SYNC_MOODLE__URL=moodle_url,
        SYNC_MOODLE__TOKEN="bench-moodle",
        SYNC_COURSESALES__URL=coursesales_url,
        SYNC_COURSESALES__USERNAME="BENCH",
        SYNC_COURSESALES__PASSWORD="bench-pass",
        SYNC_RECONCILE__INTERVAL_MINUTES="0",
    )


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def moodle_limits() -> tuple[int, int]:
    """(max_batch, max_in_flight) as the service runs with them."""
    from app.settings import MoodleSettings

    moodle = MoodleSettings()
    return moodle.max_batch, moodle.max_in_flight


def charge(items: int) -> float:
    """What the fake charges for one call carrying ``items`` items."""
    return LATENCY + ITEM_LATENCY * items


def fake_minimum(size: Size) -> float:
    """Every write at the largest batch, ``max_in_flight`` calls at a time."""
    batch, in_flight = moodle_limits()
    writes = (size.contacts, size.course_dates, size.registrations)
    return sum(math.ceil(n / batch) * LATENCY + n * ITEM_LATENCY for n in writes) / in_flight


def calls_floor(calls: list[tuple[str, dict[str, Any]]]) -> float:
    """The calls we made, charged as the fake charged them, ``max_in_flight`` at a time."""
    items = (sum(len(v) for v in params.values() if isinstance(v, list)) for _, params in calls)
    return sum(charge(n) for n in items) / moodle_limits()[1]


def row(case: str, value: str = "", p50: str = "", p99: str = "", notes: str = "") -> dict[str, Any]:
    return {"benchmark": "first sync", "case": case, "req/s": value, "p50 ms": p50, "p99 ms": p99, "errors": notes}


def rows_for(
    size: Size,
    delivered: Delivered,
    watched: Watched,
    calls: list[tuple[str, dict[str, Any]]],
    usage: dict[str, tuple[float, float]],
) -> list[dict[str, Any]]:
    batch, in_flight = moodle_limits()
    minimum = fake_minimum(size)
    stored = delivered.last_accepted
    if stored is None:
        ingest = f"NOT all stored in {DEADLINE_SECONDS:.0f} s"
    else:
        ingest = f"all stored {stored - delivered.first_sent:.1f} s after the first was sent"
    if watched.done_at is None:
        wall, verdict = "", f"NOT DONE in {DEADLINE_SECONDS:.0f} s: {watched.effects.describe()}"
    else:
        seconds = watched.done_at - delivered.first_sent
        tail = f"{watched.done_at - stored:.1f} s" if stored is not None else "n/a"
        wall = f"{seconds:.1f} s"
        verdict = f"{seconds / minimum:.1f}x the fake's minimum (goal <= 1.5x); last effect {tail} after the last "
        verdict += "delivery was stored"
    by_function = Counter(name for name, _ in calls)
    user_calls = sum(n for f, n in by_function.items() if f in USER_FUNCTIONS)
    enrol_calls = sum(n for f, n in by_function.items() if f in ENROL_FUNCTIONS)
    course_calls = sum(n for f, n in by_function.items() if f.startswith("core_course_"))
    other_calls = len(calls) - user_calls - enrol_calls - course_calls
    detail = ", ".join(f"{f} {n}" for f, n in sorted(by_function.items()))
    (api_rss, api_cpu), (worker_rss, worker_cpu) = usage["api"], usage["worker"]
    what = f"{size.contacts} contacts, {size.course_dates} course dates, {size.registrations} registrations"
    return [
        row(
            f"ingest: {size.deliveries} signed webhooks ({what}), wrk, {CONCURRENCY} connections",
            f"{delivered.rate:.0f}",
            f"{delivered.p50_ms:.0f}",
            f"{delivered.p99_ms:.0f}",
            f"{delivered.refused} refused, {delivered.accepted} accepted; {ingest}",
        ),
        row("wall time, first delivery -> every user, course, enrolment in Moodle", wall, notes=verdict),
        row(
            f"fake's minimum: writes at batch {batch}, {in_flight} in flight",
            f"{minimum:.1f} s",
            notes=f"{math.ceil(size.contacts / batch)} user, {math.ceil(size.course_dates / batch)} course, "
            f"{math.ceil(size.registrations / batch)} enrolment calls at 20 ms + 0.5 ms/item; the calls we made, "
            f"charged the same way: {calls_floor(calls):.1f} s",
        ),
        row(
            "Moodle calls per user / per enrolment",
            f"{user_calls / size.contacts:.3f} / {enrol_calls / size.registrations:.3f}",
            notes=f"goal <= 0.05 each; users {user_calls}, enrolments {enrol_calls}, courses {course_calls}, "
            f"other {other_calls}: {detail}",
        ),
        row(
            "peak RSS (VmHWM) of the API / worker",
            f"{api_rss:.0f} / {worker_rss:.0f} MiB",
            notes=f"CPU used: API {api_cpu:.0f} s, worker {worker_cpu:.0f} s (2 cores, shared with PostgreSQL, Redis, "
            "the fakes and wrk)",
        ),
    ]


def migrate() -> None:
    subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"], env=service_env(), cwd=ROOT, check=True, capture_output=True
    )


def run_once(size: Size) -> list[dict[str, Any]]:
    asyncio.run(fresh_stores())
    moodle = moodle_fake()
    with Served(moodle) as moodle_served, Served(coursesales_fake(size)) as cs:
        env = sync_env(moodle_served.url, cs.url)
        with api_and_worker(env, "first-sync") as (port, api_proc, worker_proc):
            delivered, watched = asyncio.run(first_sync(port, moodle, size))
            usage = {
                name: (peak_rss_mib(p.pid), cpu_seconds(p.pid))
                for name, p in (("api", api_proc), ("worker", worker_proc))
            }
    return rows_for(size, delivered, watched, list(moodle.calls), usage)


def run() -> list[dict[str, Any]]:
    migrate()
    return run_once(Size.scaled(SCALE))


if __name__ == "__main__":
    from bench.common import table

    print(table(run()))
