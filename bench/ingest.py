"""Benchmark 1, ingest: signed, distinct POST /webhooks/coursesales at 32 connections for 10 s, against a bare
FastAPI endpoint that parses the same JSON and returns it, served the same way (uvicorn, same process count).

The load comes from wrk (compiled, so the client is not the ceiling) replaying requests signed beforehand, each
sent once. Every accepted event must be durably committed: the rows in PostgreSQL are counted against the
accepted answers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import (
    PG_URL,
    ROOT,
    cpu_seconds,
    free_port,
    fresh_stores,
    process,
    service_env,
    uvicorn_args,
    write_signed_requests,
)

CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
WARMUP_SECONDS = 2
THREADS = 2
# More signed requests than the fastest run can send, so that none is sent twice.
REQUESTS = int(os.environ.get("BENCH_INGEST_REQUESTS", "150000"))
PROCESSES = int(os.environ.get("BENCH_INGEST_PROCESSES", "1"))
SCRIPT = ROOT / "bench" / "wrk_replay.lua"


def body(n: int, run: str) -> dict[str, Any]:
    return {
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


def wrk(port: int, requests: Path, seconds: int) -> dict[str, Any]:
    out = subprocess.run(  # noqa: S603
        [
            shutil.which("wrk") or "wrk",
            f"-t{THREADS}",
            f"-c{CONCURRENCY}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(SCRIPT),
            f"http://127.0.0.1:{port}",
            "--",
            str(requests),
            str(THREADS),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.search(r"WRK_JSON (\{.*\})", out)
    if found is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    stats = json.loads(found.group(1))
    stats["rate"] = stats["accepted"] / (stats["duration_us"] / 1e6)
    return stats


def hammer(port: int, tag: str, pid: int) -> dict[str, Any]:
    """A short warm-up, then the measured run, each with requests of its own."""
    work = ROOT / "var" / "bench"
    work.mkdir(parents=True, exist_ok=True)
    warm, measured = work / f"{tag}-warm.req", work / f"{tag}.req"
    write_signed_requests(warm, (body(n, f"{tag}w") for n in range(REQUESTS // 4)), port)
    write_signed_requests(measured, (body(n, tag) for n in range(REQUESTS)), port)
    try:
        wrk(port, warm, WARMUP_SECONDS)
        cpu = cpu_seconds(pid)
        stats = wrk(port, measured, SECONDS)
        stats["cpu_ms"] = (cpu_seconds(pid) - cpu) * 1000 / max(stats["requests"], 1)
    finally:
        warm.unlink()
        measured.unlink()
    stats["ran_out"] = stats["requests"] >= REQUESTS  # then the rate is a floor: raise BENCH_INGEST_REQUESTS
    return stats


async def committed(run: str) -> int:
    from app.db.engine import make_engine

    engine = make_engine(PG_URL)
    async with engine.connect() as conn:
        n = (
            await conn.execute(text("SELECT count(*) FROM events WHERE dedupe_key LIKE :p"), {"p": f"{run}-%"})
        ).scalar_one()
    await engine.dispose()
    return int(n)


def row(case: str, stats: dict[str, Any], note: str) -> dict[str, Any]:
    if stats["ran_out"]:
        note += f"; sent all {REQUESTS} signed requests before the end: the rate is a floor"
    return {
        "benchmark": "ingest",
        "case": case,
        "req/s": f"{stats['rate']:.0f}",
        "p50 ms": f"{stats['p50_us'] / 1000:.1f}",
        "p99 ms": f"{stats['p99_us'] / 1000:.1f}",
        "errors": note,
    }


def run() -> list[dict[str, Any]]:
    if shutil.which("wrk") is None:
        raise SystemExit("benchmark 1 needs wrk (Debian/Ubuntu: apt-get install wrk); `make bench` installs it")
    env = service_env()
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, cwd=ROOT, check=True, capture_output=True)
    asyncio.run(fresh_stores())
    port = free_port()
    with process(
        uvicorn_args("bench.bare_app:app", port, workers=PROCESSES), env, ready_url=f"http://127.0.0.1:{port}/healthz"
    ) as proc:
        bare = hammer(port, "bare", proc.pid)
    port = free_port()
    tag = f"ingest{int(datetime.now(UTC).timestamp())}"
    with process(
        [sys.executable, "-m", "app.cli", "api", "--port", str(port), "--workers", str(PROCESSES)],
        env,
        ready_url=f"http://127.0.0.1:{port}/healthz",
        log=ROOT / "var" / "bench-ingest.log",
    ) as proc:
        ours = hammer(port, tag, proc.pid)
    stored = asyncio.run(committed(tag))
    asyncio.run(fresh_stores())  # its events were never meant to run: leave nothing for the next benchmark
    ratio = ours["rate"] / bare["rate"] if bare["rate"] else 0.0
    durable = (
        f"all {ours['accepted']} accepted found committed"
        if stored >= ours["accepted"]
        else f"LOST: {stored} committed < {ours['accepted']} accepted"
    )
    served = f"uvicorn, {PROCESSES} process(es), wrk {CONCURRENCY} connections, {SECONDS} s"
    return [
        row(
            "bare FastAPI echo (baseline)", bare, f"{served}; {bare['non2xx']} non-2xx; {bare['cpu_ms']:.2f} ms CPU/req"
        ),
        row(
            "signed POST /webhooks/coursesales",
            ours,
            f"{ours['non2xx']} non-2xx; {durable}; {ours['cpu_ms']:.2f} ms CPU/req",
        ),
        {
            "benchmark": "ingest",
            "case": "ratio ours / baseline",
            "req/s": f"{ratio:.2f}",
            "p50 ms": "",
            "p99 ms": "",
            "errors": "goal: >= 0.25 with p99 < 50 ms",
        },
    ]


if __name__ == "__main__":
    from bench.common import table

    print(table(run()))
