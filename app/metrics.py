"""Prometheus metrics: what came in, what came of it, what the upstreams said, and what is waiting.

Every label value comes from a fixed set (a sender cannot grow the series by inventing names). Under the CLI every
process writes to the host's metrics directory (app.metrics_files) and the API's /metrics shows them all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from app.metrics_files import ENV, process_id

if os.environ.get(ENV):
    # Chosen before the first metric is made: each metric's value lives in this process's file.
    values.ValueClass = values.MultiProcessValue(process_identifier=process_id)

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_RECEIVED = Counter(
    "sync_events_received_total",
    "Deliveries received, by outcome (accepted, duplicate, ignored)",
    ["source", "kind", "outcome"],
    registry=REGISTRY,
)
EVENTS_FINISHED = Counter(
    "sync_events_finished_total", "Event attempts finished, by status", ["kind", "status"], registry=REGISTRY
)
JOB_SECONDS = Histogram(
    "sync_job_seconds", "Time of one batch of events, by kind", ["kind"], registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)  # fmt: skip
UPSTREAM_CALLS = Counter(
    "sync_upstream_calls_total", "Calls to Moodle and CourseSales", ["upstream", "function"], registry=REGISTRY
)
UPSTREAM_ERRORS = Counter(
    "sync_upstream_errors_total",
    "Failed upstream calls, by error code",
    ["upstream", "function", "errorcode"],
    registry=REGISTRY,
)
INTAKE_BATCH = Histogram(
    "sync_intake_batch_size", "Deliveries committed together (group commit)", registry=REGISTRY,
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 500),
)  # fmt: skip

# Moodle's error codes are identifiers; a password-policy failure's "code" is the policy's text.
_ERRORCODE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")


def errorcode_label(code: str) -> str:
    return code if _ERRORCODE.fullmatch(code) else "other"


UPSTREAM_STATES = ("ok", "not_configured", "unavailable", "auth_failed")


def exposition(
    *,
    counts: dict[str, int],
    oldest_seconds: float,
    queue_depth: int | None,
    upstreams: dict[str, str] | None = None,
    by_tenant: dict[str, int] | None = None,
    tenant_problems: list[tuple[str, str, str]] | None = None,
) -> bytes:
    """The text of a scrape: every process's counters, then the gauges read from the database for it.
    ``tenant_problems``: (tenant, upstream, state) of each tenant's upstream that cannot be used now."""
    directory = os.environ.get(ENV)
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
    else:
        registry = REGISTRY
    now = _Now(counts, oldest_seconds, queue_depth, upstreams or {}, by_tenant or {}, tenant_problems or [])
    return generate_latest(registry) + generate_latest(now)


class _Now(CollectorRegistry):
    """Gauges of the state as it is at the scrape, kept out of the per-process files (they are not per process)."""

    def __init__(
        self,
        counts: dict[str, int],
        oldest: float,
        depth: int | None,
        states: dict[str, str],
        tenants: dict[str, int],
        problems: list[tuple[str, str, str]],
    ) -> None:
        super().__init__(auto_describe=False)
        self._values = counts, oldest, depth
        self._states = states
        self._tenants = tenants
        self._problems = problems

    def collect(self) -> Iterator[Any]:
        counts, oldest, depth = self._values
        by_status = GaugeMetricFamily(
            "sync_events",
            "Open events and events waiting for a person (failed, needs_review), by status",
            labels=["status"],
        )
        for status, count in counts.items():
            by_status.add_metric([status], count)
        yield by_status
        if self._tenants:  # a hub: each tenant of the registry (its slug, a bounded label), default included
            per_tenant = GaugeMetricFamily("sync_tenant_open_events", "Open events of each tenant", labels=["tenant"])
            for slug, count in sorted(self._tenants.items()):
                per_tenant.add_metric([slug], count)
            yield per_tenant
            # Only the upstreams that cannot be used now: a thousand tenants' usable ones would be eight thousand
            # series saying nothing. An alert rule needs only "any series at all".
            problems = GaugeMetricFamily(
                "sync_tenant_upstream_problem",
                "1 for each tenant's upstream that cannot be used now, by its state (unavailable, auth_failed)",
                labels=["tenant", "upstream", "state"],
            )
            for slug, upstream, now_state in self._problems:
                problems.add_metric([slug, upstream, now_state], 1)
            yield problems
        yield GaugeMetricFamily(
            "sync_oldest_unfinished_event_seconds", "Age of the oldest event not finished yet", oldest
        )
        yield GaugeMetricFamily("sync_queue_depth", "Jobs waiting in the queues", -1 if depth is None else depth)
        state = GaugeMetricFamily(
            "sync_upstream_state", "1 for the state each upstream is in now", labels=["upstream", "state"]
        )
        for upstream, now in self._states.items():
            for name in UPSTREAM_STATES:
                state.add_metric([upstream, name], 1 if name == now else 0)
        yield state
