"""Benchmark 8 (issue 22), a steady stream: 1,500 signed deliveries (500 contacts, each followed by its 2
registrations) sent at 300 a second, as a real first sync arrives from CourseSales, into the Moodle fake charging
20 ms a call + 0.5 ms an item; the 5 course dates' Moodle courses exist already. Measured: Moodle user calls per user
and enrolment calls per enrolment (goals 0.1 and 0.05: work that can wait a moment gathers into batches while calls
are in flight), and the time from the last delivery accepted to the last effect in Moodle (goal under 3 s). One API
and one worker process, real PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import PG_URL, TOKENS, WHSEC, api_and_worker, fresh_stores
from bench.fakes import Served
from bench.first_sync import (
    CATEGORY,
    DOMAIN,
    ENROL_FUNCTIONS,
    FIRST_DATE,
    ITEM_LATENCY,
    LATENCY,
    MOODLE_CATEGORY,
    USER_FUNCTIONS,
    contact,
    migrate,
    sync_env,
)

CONTACTS = int(os.environ.get("BENCH_STREAM_CONTACTS", "500"))
PER_CONTACT = 2
DATES = 5
RATE = float(os.environ.get("BENCH_STREAM_RATE", "300"))
DEADLINE = 120.0


def stream() -> list[dict[str, Any]]:
    """Each contact, then its registrations (two course dates of five), in the order a first sync sends them."""
    out: list[dict[str, Any]] = []
    for i in range(CONTACTS):
        out.append({"type": "contact.upserted", "id": f"ss-c-{i}", "contact": contact(i)})
        for k in range(PER_CONTACT):
            registration = {
                "document_external_id": f"SS-{i}-{k}",
                "course_date_id": FIRST_DATE + (i + k) % DATES,
                "contact": contact(i),
            }
            out.append({"type": "registration.registered", "id": f"ss-r-{i}-{k}", "registration": registration})
    return out


def fakes() -> tuple[Any, Any]:
    from tests.fakes.coursesales import CourseSalesFake
    from tests.fakes.moodle import MoodleFake
    from tests.fakes.moodle_state import new_course

    moodle = MoodleFake("5.0", token="bench-moodle")
    moodle.latency, moodle.item_latency = LATENCY, ITEM_LATENCY
    cs = CourseSalesFake("BENCH", "bench-pass", seed=False)
    cs.add_category(CATEGORY, "Stream", moodle_category_id=str(MOODLE_CATEGORY))
    start = date.today() + timedelta(days=30)
    for j in range(DATES):
        cdid = FIRST_DATE + j
        moodle.courses[100 + j] = new_course(100 + j, f"Stream {j}", f"STREAM-{j}", MOODLE_CATEGORY, idnumber=str(cdid))
        cs.add_course_date(cdid, start, start + timedelta(days=1), CATEGORY, status_id=1, visibility=2)
    return moodle, cs


async def seed_links() -> None:
    """The course dates' links, as their first sync would have left them."""
    from app.db.engine import make_engine, make_session_factory
    from app.db.models import CourseLink

    await fresh_stores()
    engine = make_engine(PG_URL)
    async with make_session_factory(engine)() as s:
        for j in range(DATES):
            s.add(CourseLink(course_date_id=FIRST_DATE + j, moodle_course_id=100 + j))
        await s.commit()
    await engine.dispose()


async def send_all(port: int, deliveries: list[dict[str, Any]]) -> float:
    """Each delivery signed and posted at its time (RATE a second, each its own request); when the last was
    accepted."""
    from standardwebhooks.webhooks import Webhook

    hook = Webhook(WHSEC)
    last = 0.0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:

        async def one(delivery: dict[str, Any]) -> None:
            nonlocal last
            raw, now = json.dumps(delivery), datetime.now(UTC)
            headers = {
                "Authorization": f"Bearer {TOKENS['coursesales']}",
                "Content-Type": "application/json",
                "webhook-id": delivery["id"],
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": hook.sign(delivery["id"], now, raw),
            }
            r = await client.post("/webhooks/coursesales", content=raw, headers=headers)
            r.raise_for_status()
            last = max(last, time.monotonic())

        tasks, start = [], time.monotonic()
        for n, delivery in enumerate(deliveries):
            await asyncio.sleep(max(0.0, start + n / RATE - time.monotonic()))
            tasks.append(asyncio.create_task(one(delivery)))
        await asyncio.gather(*tasks)
    return last


def effects(fake: Any) -> tuple[int, int]:
    users = sum(1 for u in list(fake.users.values()) if u["username"].endswith("@" + DOMAIN))
    enrolled = sum(1 for (_, cid), e in list(fake.enrolments.items()) if 100 <= cid < 100 + DATES and e["status"] == 0)
    return users, enrolled


async def run_stream(port: int, moodle: Any) -> tuple[float, float | None]:
    deliveries = stream()
    last_sent = await send_all(port, deliveries)
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if effects(moodle) == (CONTACTS, CONTACTS * PER_CONTACT):
            return last_sent, time.monotonic()
        await asyncio.sleep(0.05)
    return last_sent, None


def run() -> list[dict[str, Any]]:
    migrate()
    asyncio.run(seed_links())
    moodle, cs = fakes()
    with Served(moodle) as moodle_served, Served(cs) as cs_served:
        env = sync_env(moodle_served.url, cs_served.url)
        with api_and_worker(env, "stream") as (port, _, _):
            last_sent, done = asyncio.run(run_stream(port, moodle))
    calls = Counter(name for name, _ in moodle.calls)
    user_calls = sum(n for f, n in calls.items() if f in USER_FUNCTIONS)
    enrol_calls = sum(n for f, n in calls.items() if f in ENROL_FUNCTIONS)
    per_user, per_enrolment = user_calls / CONTACTS, enrol_calls / (CONTACTS * PER_CONTACT)
    tail = None if done is None else done - last_sent
    users, enrolled = effects(moodle)
    calls_met = per_user <= 0.1 and per_enrolment <= 0.05
    tail_text = f"{tail:.1f} s" if tail is not None else f"NOT DONE in {DEADLINE:.0f} s ({users} users, {enrolled})"
    what = (
        f"{len(stream())} deliveries ({CONTACTS} contacts, each then its {PER_CONTACT} registrations) at {RATE:.0f}/s"
    )
    return [
        {
            "benchmark": "steady stream",
            "case": f"{what}: Moodle calls per user / per enrolment",
            "req/s": f"{per_user:.3f} / {per_enrolment:.3f}",
            "goal": f"<= 0.1 / <= 0.05 (issue 22): {'met' if calls_met else 'NOT met'}",
            "errors": ", ".join(f"{f} {n}" for f, n in sorted(calls.items())),
        },
        {
            "benchmark": "steady stream",
            "case": "last delivery accepted -> last effect in Moodle",
            "req/s": tail_text,
            "goal": f"< 3 s (issue 22): {'met' if tail is not None and tail < 3 else 'NOT met'}",
        },
    ]


if __name__ == "__main__":
    from bench.common import table

    print(table(run()))
