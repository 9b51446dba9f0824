"""`make bench`: run every benchmark (real PostgreSQL and Redis, fakes on loopback) and print one table."""

from __future__ import annotations

import time

from bench import backlog, completion, console_reads, fair_tenants, first_sync, idle_tenants, ingest, reconcile
from bench.common import table


def main() -> None:
    started = time.monotonic()
    rows = ingest.run() + first_sync.run() + backlog.run() + reconcile.run() + completion.run() + console_reads.run()
    rows += idle_tenants.run() + fair_tenants.run()
    print(table(rows))
    print(f"\nall benchmarks: {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
