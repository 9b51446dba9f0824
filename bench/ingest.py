"""Benchmark 1, ingest: signed, distinct POST /webhooks/coursesales at 32 connections for 10 s, against a bare
FastAPI endpoint that parses the same JSON, served the same way (uvicorn, one process). Every accepted event
must be durably committed: the count in PostgreSQL is checked against the accepted answers."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import text
from standardwebhooks.webhooks import Webhook

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import PG_URL, ROOT, WHSEC, Load, drive, free_port, process, service_env, uvicorn_args

CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))


def body(n: int, run: str) -> str:
    return json.dumps(
        {
            "type": "contact.upserted",
            "id": f"{run}-{n}",
            "contact": {
                "contact_id": n + 1,
                "username": f"learner{n}@example.com",
                "firstname": "Bench",
                "lastname": f"Learner {n}",
                "email": f"learner{n}@example.com",
                "password": "S3cret!pass",
                "phone": "0400000000",
                "active": True,
            },
        }
    )


async def hammer(base: str, run: str) -> Load:
    hook = Webhook(WHSEC)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def one(n: int) -> httpx.Response:
            raw = body(n, run)
            now = datetime.now(UTC)
            headers = {
                "webhook-id": f"{run}-{n}",
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": hook.sign(f"{run}-{n}", now, raw),
                "content-type": "application/json",
            }
            return await client.post("/webhooks/coursesales", content=raw, headers=headers)

        await drive(one, concurrency=CONCURRENCY, seconds=1.0)  # warm-up, not counted
        return await drive(one, concurrency=CONCURRENCY, seconds=SECONDS)


async def committed(run: str) -> int:
    from app.db.engine import make_engine

    engine = make_engine(PG_URL)
    async with engine.connect() as conn:
        n = (
            await conn.execute(text("SELECT count(*) FROM events WHERE dedupe_key LIKE :p"), {"p": f"{run}-%"})
        ).scalar_one()
    await engine.dispose()
    return int(n)


def run() -> list[dict[str, Any]]:
    rows = []
    port = free_port()
    with process(uvicorn_args("bench.bare_app:app", port), service_env(), ready_url=f"http://127.0.0.1:{port}/healthz"):
        bare = asyncio.run(hammer(f"http://127.0.0.1:{port}", "bare"))
    subprocess_run([sys.executable, "-m", "app.cli", "migrate"])
    port = free_port()
    tag = f"ingest{int(datetime.now(UTC).timestamp())}"
    with process(
        [sys.executable, "-m", "app.cli", "api", "--port", str(port)],
        service_env(),
        ready_url=f"http://127.0.0.1:{port}/healthz",
        log=ROOT / "var" / "bench-ingest.log",
    ):
        ours = asyncio.run(hammer(f"http://127.0.0.1:{port}", tag))
    stored = asyncio.run(committed(tag))
    for name, load in (("bare FastAPI echo (baseline)", bare), ("POST /webhooks/coursesales", ours)):
        rows.append(
            {
                "benchmark": "ingest",
                "case": name,
                "req/s": f"{load.rate:.0f}",
                "p50 ms": f"{load.pct(50):.1f}",
                "p99 ms": f"{load.pct(99):.1f}",
                "errors": load.errors,
            }
        )
    rows.append(
        {
            "benchmark": "ingest",
            "case": "ratio ours / baseline; durably committed",
            "req/s": f"{ours.rate / bare.rate:.2f}" if bare.rate else "n/a",
            "p50 ms": "",
            "p99 ms": "",
            "errors": f"{stored} of {ours.ok + 32 * 0} accepted in PostgreSQL"
            if stored >= ours.ok
            else f"LOST: {stored} < {ours.ok}",
        }
    )
    return rows


def subprocess_run(args: list[str]) -> None:
    import subprocess

    subprocess.run(args, env=service_env(), cwd=ROOT, check=True, capture_output=True)  # noqa: S603


if __name__ == "__main__":
    from bench.common import table

    print(table(run()))
