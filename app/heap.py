"""The garbage collector's settings for a long-running process (the API's, the worker's, or `serve`'s).

CPython collects its youngest objects every 700 net allocations of containers, and every object ever made each few
dozen of those. A worker round of 400 events makes tens of thousands of short-lived objects, and start-up leaves
over a hundred thousand long-lived ones (modules, SQLAlchemy's and pydantic's caches; 124,000 in the worker): in a
30,200-event drain the collector took 1.6 s of the worker's 6.5 s of CPU, 1.1 s of it in fifteen full passes
(BENCHMARKS.md).

Start-up's objects are frozen out of the collector's view, and it runs every 50,000 net allocations: nearly every
object here is freed by its reference count the moment its round or request ends, so what waits for the collector
is only the reference cycles made since its last pass. Measured: a quiet worker's memory is unchanged (benchmark 6).
"""

from __future__ import annotations

import gc

# (youngest, middle, oldest): the first is CPython's 700 raised; the others stay near its own (10, 10).
THRESHOLDS = (50_000, 20, 10)


def settle() -> None:
    """Collect, freeze what start-up made, and set THRESHOLDS: call once start-up is done."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
