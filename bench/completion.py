"""Benchmark 4, completion latency: 1,000 course completions posted at 50 per second; from the Moodle event
accepted (our 200) to the CourseSales process step executed, p50 and p99. Real PostgreSQL and Redis, an API
and a worker process, the Moodle and CourseSales fakes on loopback (completion verified with Moodle first)."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import PG_URL, ROOT, TOKENS, api_and_worker, fresh_stores, service_env
from bench.fakes import Served, StepClock

N = int(os.environ.get("BENCH_COMPLETIONS", "1000"))
RATE = float(os.environ.get("BENCH_COMPLETION_RATE", "50"))
# Warm-up completions (other learners, not measured): a running service, not a cold start, is what is timed.
WARM = int(os.environ.get("BENCH_COMPLETION_WARMUP", "50"))
COURSE, CD, STEP = 50, 777, 77


def moodle_fake() -> Any:
    from tests.fakes.moodle import MoodleFake
    from tests.fakes.moodle_state import new_course, new_user

    fake = MoodleFake("5.0", token="bench-moodle")
    fake.courses[COURSE] = new_course(COURSE, "Bench course", "BENCH-1", 2, idnumber=str(CD), criteria=[1])
    for i in range(N + WARM):
        uid = 1000 + i
        fake.users[uid] = new_user(uid, f"learner{i}", "Bench", f"Learner {i}", f"learner{i}@example.com")
        fake.enrolments[(uid, COURSE)] = {"status": 0, "timestart": 0, "timeend": 0, "roles": [5], "timecreated": 0}
        fake.mark_complete(uid, COURSE)
    return fake


async def seed() -> None:
    from sqlalchemy import text

    from app.db.engine import make_engine, make_session_factory
    from app.db.models import CourseLink, Registration, UserLink

    await fresh_stores()
    engine = make_engine(PG_URL)
    async with make_session_factory(engine)() as s:
        s.add(CourseLink(course_date_id=CD, moodle_course_id=COURSE))
        for i in range(N + WARM):
            s.add(UserLink(contact_id=i + 1, username=f"learner{i}", moodle_user_id=1000 + i))
            s.add(Registration(document_external_id=f"D-{i}", course_date_id=CD, contact_key=f"contact:{i + 1}"))
        await s.commit()
    async with engine.begin() as conn:
        await conn.execute(text("ANALYZE user_links, registrations, course_links"))  # as autovacuum would
    await engine.dispose()


def completed(learner: int, course: int) -> dict[str, Any]:
    """Moodle's course_completed event of learner ``learner`` (Moodle user 1000 + learner), as the plugin forwards it."""
    return {
        "eventname": "\\core\\event\\course_completed",
        "objectid": str(learner + 1),
        "courseid": str(course),
        "relateduserid": str(1000 + learner),
        "userid": "2",
        "contextinstanceid": str(course),
        "other": {"relateduserid": str(1000 + learner)},
        "timecreated": int(time.time()),
    }


async def post_all(base: str, learners: range) -> dict[str, float]:
    accepted: dict[str, float] = {}
    async with httpx.AsyncClient(
        base_url=base, timeout=30, headers={"Authorization": f"Bearer {TOKENS['moodle']}"}
    ) as client:

        async def one(i: int) -> None:
            r = await client.post("/webhooks/moodle", json=completed(i, COURSE))
            r.raise_for_status()
            accepted[f"D-{i}"] = time.time()

        tasks = []
        start = time.monotonic()
        for n, i in enumerate(learners):
            await asyncio.sleep(max(0.0, start + n / RATE - time.monotonic()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return accepted


def wait_for_steps(clock: StepClock, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(clock.times) < n and time.monotonic() < deadline:
        time.sleep(0.1)


def run() -> list[dict[str, Any]]:
    env_base = service_env()
    subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"], env=env_base, cwd=ROOT, check=True, capture_output=True
    )
    asyncio.run(seed())
    from tests.fakes.coursesales import CourseSalesFake

    clock = StepClock(CourseSalesFake("BENCH", "bench-pass"))
    with Served(moodle_fake()) as moodle, Served(clock) as cs:
        env = service_env(
            SYNC_MOODLE__URL=moodle.url,
            SYNC_MOODLE__TOKEN="bench-moodle",
            SYNC_COURSESALES__URL=cs.url,
            SYNC_COURSESALES__USERNAME="BENCH",
            SYNC_COURSESALES__PASSWORD="bench-pass",
            SYNC_COMPLETION__PROCESS_STEP_ID=str(STEP),
            SYNC_RECONCILE__INTERVAL_MINUTES="0",
        )
        with api_and_worker(env, "completion", queue="default") as (port, _, _):
            base = f"http://127.0.0.1:{port}"
            asyncio.run(post_all(base, range(N, N + WARM)))
            wait_for_steps(clock, WARM)
            accepted = asyncio.run(post_all(base, range(N)))
            wait_for_steps(clock, WARM + N)
    latencies = sorted(clock.times[d] - accepted[d] for d in accepted if d in clock.times)
    if os.environ.get("BENCH_DUMP"):
        import json

        dump = sorted((accepted[d], clock.times.get(d, 0) - accepted[d]) for d in accepted)
        (ROOT / "var" / "bench-completion-latencies.json").write_text(json.dumps(dump))
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return [
        {
            "benchmark": "completion latency",
            "case": f"{N} completions at {RATE:.0f}/s, accepted -> step executed",
            "req/s": f"{RATE:.0f}",
            "p50 ms": f"{q[49] * 1000:.0f}",
            "p99 ms": f"{q[98] * 1000:.0f}",
            "errors": f"{len(latencies)} of {N} steps, {len(clock.app.steps) - WARM} step calls (after {WARM} warm-up)",
        }
    ]


if __name__ == "__main__":
    from bench.common import table

    print(table(run()))
