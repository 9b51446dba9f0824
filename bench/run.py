"""`make bench`: run every benchmark (real PostgreSQL and Redis, fakes on loopback) and print one table."""

from __future__ import annotations

from bench import completion, ingest
from bench.common import table


def main() -> None:
    rows = ingest.run() + completion.run()
    print(table(rows))


if __name__ == "__main__":
    main()
