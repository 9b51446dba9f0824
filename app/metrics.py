"""Prometheus metrics: what came in, what came of it, what the upstreams said, and what is waiting."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
QUEUE_DEPTH = Gauge("sync_queue_depth", "Jobs waiting in the queues", registry=REGISTRY)
OLDEST_OPEN_SECONDS = Gauge(
    "sync_oldest_unfinished_event_seconds", "Age of the oldest event not finished yet", registry=REGISTRY
)
EVENTS_BY_STATUS = Gauge(
    "sync_events",
    "Open events and events waiting for a person (failed, needs_review), by status",
    ["status"],
    registry=REGISTRY,
)
