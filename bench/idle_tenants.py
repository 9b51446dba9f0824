"""Benchmark 6 (issue 21): what quiet tenants cost. A real `moodle-sync worker` (every loop running: sweeper, probe,
alerts, the periodic reconciles) with 10, 100 and 1,000 tenants registered through the registry's own rules, each
with its Moodle and CourseSales settings and encrypted credentials, and no work at all. Measured on the worker once
its first round of every loop is over (the registered tenants' first reconcile turn included): its resident memory
(VmRSS) and the CPU it uses over a quiet window. Goals: memory grows by under 50 KB a tenant, idle CPU stays flat.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import PG_URL, ROOT, SECRET_KEY, cpu_seconds, fresh_stores, process, service_env

COUNTS = (10, 100, 1000)
SETTLE = float(os.environ.get("BENCH_IDLE_SETTLE", "95"))  # past the first walk of the tenants' reconcile (60 s)
WINDOW = float(os.environ.get("BENCH_IDLE_WINDOW", "20"))


async def register(count: int) -> None:
    from pydantic import SecretStr

    from app.runtime import open_runtime
    from app.settings import Settings
    from app.sync import tenants

    await fresh_stores()
    base = Settings(database_url=PG_URL, secret_key=SecretStr(SECRET_KEY), mode="test")
    rt = await open_runtime(base)
    try:
        async with rt.sessions() as s:
            for n in range(count):
                await tenants.add(
                    s, rt.vault, base, slug=f"quiet-{n}", name=f"Quiet provider {n}", actor="bench",
                    config={
                        "moodle": {"url": f"https://moodle-{n}.example.invalid"},
                        "coursesales": {"url": f"https://cs-{n}.example.invalid", "username": f"soap{n}"},
                    },
                    secrets={
                        "MOODLE__TOKEN": f"quiet-moodle-token-{n:06d}",
                        "COURSESALES__PASSWORD": f"quiet-password-{n}",
                        "WEBHOOKS__COURSESALES_TOKEN": f"quiet-webhook-token-{n:06d}",
                        "API__TOKEN": f"quiet-api-token-{n:06d}-xx",
                    },
                )  # fmt: skip
            await s.commit()
    finally:
        await rt.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def measure(count: int) -> dict[str, float]:
    subprocess_env = service_env(SYNC_RECONCILE__INTERVAL_MINUTES="0")
    import subprocess

    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=subprocess_env, cwd=ROOT, check=True)
    asyncio.run(register(count))
    worker = [sys.executable, "-m", "app.cli", "worker", "--queue", "default"]
    with process(worker, subprocess_env, log=ROOT / "var" / f"bench-idle-{count}.log") as proc:
        time.sleep(SETTLE)
        cpu, started = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(WINDOW)
        used = cpu_seconds(proc.pid) - cpu
        return {"tenants": count, "rss_kib": rss_kib(proc.pid), "cpu_pct": used / (time.monotonic() - started) * 100}


def run() -> list[dict[str, Any]]:
    results = [measure(n) for n in COUNTS]
    first, last = results[0], results[-1]
    per_tenant = (last["rss_kib"] - first["rss_kib"]) / (last["tenants"] - first["tenants"])
    rows = [
        {
            "benchmark": "idle tenants",
            "case": f"{int(r['tenants'])} registered tenants, quiet: a worker with every loop running",
            "errors": f"RSS {r['rss_kib'] / 1024:.1f} MiB; CPU {r['cpu_pct']:.2f}% over {WINDOW:.0f} s, "
            f"measured {SETTLE:.0f} s after start",
        }
        for r in results
    ]
    rows.append(
        {
            "benchmark": "idle tenants",
            "case": f"growth {COUNTS[0]} -> {COUNTS[-1]} tenants",
            "errors": f"{per_tenant:.1f} KiB a tenant (goal < 50: {'met' if per_tenant < 50 else 'NOT met'}); "
            f"CPU {first['cpu_pct']:.2f}% -> {last['cpu_pct']:.2f}%",
        }
    )
    return rows


if __name__ == "__main__":
    from bench.common import table

    print(table(run()))
