"""`make bench`: run every benchmark (real PostgreSQL and Redis, fakes on loopback) and print one table."""

from __future__ import annotations

import time

from bench import (
    backlog,
    completion,
    console_reads,
    fair_tenants,
    first_sync,
    idle_tenants,
    ingest,
    reconcile,
    steady_stream,
)
from bench.common import loop_seconds, table


def main() -> None:
    started = time.monotonic()
    speed = [loop_seconds()]
    rows = ingest.run() + first_sync.run() + backlog.run() + steady_stream.run() + reconcile.run() + completion.run()
    rows += console_reads.run()
    rows += idle_tenants.run() + fair_tenants.run()
    speed.append(loop_seconds())
    rows.append(
        {
            "benchmark": "machine",
            "case": "a 10,000,000-step Python loop, before and after",
            "req/s": " / ".join(f"{s:.2f} s" for s in speed),
            "errors": "the machine's speed while the figures above were taken: compare runs at like speeds",
        }
    )
    print(table(rows))
    print(f"\nall benchmarks: {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
