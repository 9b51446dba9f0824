"""Benchmark 5 (issue 18): the reads an operator's console makes, with 1,000,000 events kept on PostgreSQL.

The inbox is filled server-side (INSERT ... SELECT generate_series) as a year of a busy provider leaves it: most
events done with their payloads purged, a few hundred failed or waiting for review, a few open; one attempt each;
a reconcile run a day.
Then a real `moodle-sync api` answers each read the console will make, one at a time, and its p50 and p95 are
timed from the client. The goal: p95 under 200 ms for every page that reads only our database: the /api reads,
and the console's own pages (/console, as a signed-in operator's browser asks for them: the session check, the
pause banner and the template included).
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
from typing import Any

import asyncpg
import httpx

from bench.common import PG_URL, ROOT, TOKENS, free_port, process, service_env, table

EVENTS = 1_000_000
OPERATOR_PASSWORD = "bench operator password"
REPEATS = 40
GOAL_MS = 200.0

SEED = """
INSERT INTO events (tenant_id, source, kind, dedupe_key, body_hash, subject, payload, status, attempts, last_error,
                    result, created_at, updated_at)
SELECT 0, 'coursesales',
       (ARRAY['contact.upserted', 'registration.registered', 'registration.cancelled'])[1 + n % 3],
       'bench-' || n, '-',
       'contact:' || (1 + n % 50000),
       CASE WHEN n > $1 - 20000 THEN '{"contact": {"contact_id": 1}}'::json END,
       CASE WHEN n % 2000 = 0 THEN 'failed' WHEN n % 3001 = 0 THEN 'needs_review'
            WHEN n > $1 - 50 THEN 'retrying' ELSE 'done' END,
       1,
       CASE WHEN n % 2000 = 0 THEN 'Moodle refused the call: invalidparameter' END,
       '{"moodle_user_id": 5}'::json,
       now() - ($1 - n) * interval '30 seconds',
       now() - ($1 - n) * interval '30 seconds'
FROM generate_series(1, $1) AS n
"""
ATTEMPTS = """
INSERT INTO attempts (tenant_id, event_id, number, started_at, finished_at, outcome, error)
SELECT 0, id, 1, updated_at, updated_at, status, last_error FROM events
"""
REGISTRATIONS = """
INSERT INTO registrations (tenant_id, document_external_id, course_date_id, contact_key, status, created_at,
                           updated_at)
SELECT 0, 'D-' || n, 26000 + n % 200, 'contact:' || (1 + n % 50000), 'registered', now(), now()
FROM generate_series(1, 50000) AS n
"""

RUNS = """
INSERT INTO runs (tenant_id, kind, trigger, dry_run, status, counts, created_at, finished_at)
SELECT 0, 'reconcile', 'cron', false, 'done', '{"plan.enrol": 2, "checked": 50000}'::json,
       now() - n * interval '1 day', now() - n * interval '1 day' + interval '3 minutes'
FROM generate_series(1, 365) AS n
"""


async def seed() -> None:
    conn = await asyncpg.connect(PG_URL.replace("+asyncpg", ""))
    try:
        await conn.execute(
            "TRUNCATE events, attempts, registrations, runs, alerts, audit, operators, keyring RESTART IDENTITY CASCADE"
        )
        await conn.execute(SEED, EVENTS)
        await conn.execute(ATTEMPTS)
        await conn.execute(REGISTRATIONS)
        await conn.execute(RUNS)
        # What autosummarize's work items did over the year for a table filled in seconds: its BRIN ranges summarized.
        await conn.execute("SELECT brin_summarize_new_values('ix_attempts_started')")
        await conn.execute("ANALYZE events, attempts, registrations, runs")
    finally:
        await conn.close()


def reads(newest: int) -> dict[str, str]:
    """The console's reads of our database only, by what they are for."""
    return {
        "events, newest page": "/api/events?limit=50",
        "events, failed": "/api/events?status=failed&limit=50",
        "events, one contact": "/api/events?subject=contact:1234&limit=50",
        "events, one Document": "/api/events?document=D-1234&limit=50",
        "events, one page deep": "/api/events?limit=50&offset=5000",
        "one event with attempts": f"/api/events/{newest}",
        "reconcile runs": "/api/runs",
        "audit trail": "/api/audit",
        "metrics (open and attention counts)": "/metrics",
        "overview (pause, counts, oldest, last run)": "/api/overview",
        "outcomes per hour, 24 hours": "/api/events/per-hour?window=24h",
        "outcomes per hour, 7 days": "/api/events/per-hour?window=7d",
    }


def pages(newest: int) -> dict[str, str]:
    """The console's own pages that read only our database, as a signed-in operator's browser asks for them (the
    health tiles, which ask Moodle and CourseSales, load after the page and are not among them)."""
    return {
        "console: overview": "/console",
        "console: events, newest page": "/console/events",
        "console: events, failed": "/console/events?status=failed",
        "console: events, one contact": "/console/events?field=contact&q=1234",
        "console: one event": f"/console/events/{newest}",
        "console: needs attention": "/console/attention",
        "console: reconcile runs": "/console/runs",
        "console: audit": "/console/audit",
        "console: settings": "/console/settings",
        "console: chart data, 7 days": "/console/data/per-hour?window=7d",
    }


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def signed_in(base: str, env: dict[str, str]) -> httpx.Client:
    """An operator made with the CLI, signed in as a browser would: the session cookie in the client."""
    add = [sys.executable, "-m", "app.cli", "operators", "add", "bench"]
    subprocess.run(  # noqa: S603 (our own CLI)
        add, env=env, cwd=ROOT, input=OPERATOR_PASSWORD + "\n", text=True, capture_output=True, check=False
    )
    client = httpx.Client(base_url=base, timeout=30)
    found = CSRF.search(client.get("/console/sign-in").text)
    assert found, "no sign-in form"
    form = {"name": "bench", "password": OPERATOR_PASSWORD, "csrf": found.group(1)}
    assert client.post("/console/sign-in", data=form).status_code == 303, "the bench operator could not sign in"
    return client


def measure(client: httpx.Client, path: str) -> tuple[float, float]:
    times: list[float] = []
    client.get(path).raise_for_status()  # warm
    for _ in range(REPEATS):
        started = time.perf_counter()
        client.get(path).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    q = statistics.quantiles(times, n=20)
    return statistics.median(times), q[18]


def run() -> list[dict[str, Any]]:
    import asyncio

    env = service_env()
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, cwd=ROOT, check=True, capture_output=True)
    started = time.monotonic()
    asyncio.run(seed())
    seeded = time.monotonic() - started
    port = free_port()
    rows = []
    args = [sys.executable, "-m", "app.cli", "api", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with process(args, env, ready_url=f"{base}/healthz"):
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKENS['api']}"}, timeout=30)
        console = signed_in(base, env)
        wanted = [(api, what, path) for what, path in reads(EVENTS).items()]
        wanted += [(console, what, path) for what, path in pages(EVENTS).items()]
        for client, what, path in wanted:
            p50, p95 = measure(client, path)
            verdict = "met" if p95 < GOAL_MS else "NOT MET"
            rows.append({
                "benchmark": "console reads",
                "case": what,
                "req/s": "",
                "p50 ms": f"{p50:.1f}",
                "p95 ms": f"{p95:.1f}",
                "errors": f"{EVENTS:,} events kept; GET {path}; goal p95 < {GOAL_MS:.0f} ms: {verdict}",
            })  # fmt: skip
        api.close()
        console.close()
    rows[0]["errors"] += f"; seeded in {seeded:.0f} s"
    return rows


if __name__ == "__main__":
    print(table(run()))
