"""Shared pieces of the benchmarks: servers in subprocesses, a load generator, percentiles, the results table."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
# The benchmarks' own targets, never the service's: every benchmark empties them (TRUNCATE, FLUSHDB).
PG_URL = os.environ.get("SYNC_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1/test")
REDIS_URL = os.environ.get("SYNC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")  # a database of its own


def _refuse_other_targets() -> None:
    from sqlalchemy.engine import make_url

    name = make_url(PG_URL).database or ""
    if not any(word in name.lower() for word in ("bench", "test")):
        raise SystemExit(f"SYNC_BENCH_DATABASE_URL names database {name!r}: the benchmarks empty it, so its name "
                         "must contain 'bench' or 'test'")  # fmt: skip
    if REDIS_URL == os.environ.get("SYNC_REDIS_URL"):
        raise SystemExit("SYNC_BENCH_REDIS_URL is the service's own SYNC_REDIS_URL: the benchmarks flush it")


SECRET_KEY = "bench-secret-key-0123456789abcdefgh"
TOKENS = {"api": "bench-api-token-1234", "coursesales": "bench-cs-token-1234", "moodle": "bench-moodle-token-1234"}
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    env.update(
        SYNC_MODE="test",
        SYNC_DATABASE_URL=PG_URL,
        SYNC_REDIS_URL=REDIS_URL,
        SYNC_SECRET_KEY=SECRET_KEY,
        SYNC_API__TOKEN=TOKENS["api"],
        SYNC_WEBHOOKS__COURSESALES_TOKEN=TOKENS["coursesales"],
        SYNC_WEBHOOKS__COURSESALES_SECRET=WHSEC,
        SYNC_WEBHOOKS__MOODLE_TOKEN=TOKENS["moodle"],
        SYNC_LOG_LEVEL="WARNING",
        SYNC_CONFIG=str(ROOT / "bench" / "no-config.toml"),
    )
    env.update(extra)
    return env


@contextmanager
def process(args: list[str], env: dict[str, str], *, ready_url: str | None = None, log: Path | None = None) -> Any:
    """Run a process for the length of a block; wait until ``ready_url`` answers."""
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log or os.devnull, "w")
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # noqa: S603
    try:
        if ready_url:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(ready_url, timeout=1).status_code < 500:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError(f"{args} exited early ({proc.returncode}); see {log}")
                time.sleep(0.2)
            else:
                raise RuntimeError(f"{ready_url} not ready in 60 s")
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.close()


@contextmanager
def api_and_worker(env: dict[str, str], name: str, *, queue: str = "all") -> Any:
    """A `moodle-sync api` on a free port (ready once /healthz answers) and a `moodle-sync worker`, logging to
    var/bench-NAME-api.log and -worker.log; yields (port, api process, worker process)."""
    port = free_port()
    api = [sys.executable, "-m", "app.cli", "api", "--port", str(port)]
    worker = [sys.executable, "-m", "app.cli", "worker", "--queue", queue]
    logs = ROOT / "var"
    with (
        process(api, env, ready_url=f"http://127.0.0.1:{port}/healthz", log=logs / f"bench-{name}-api.log") as api_proc,
        process(worker, env, log=logs / f"bench-{name}-worker.log") as worker_proc,
    ):
        yield port, api_proc, worker_proc


def write_signed_requests(path: Path, deliveries: Iterable[dict[str, Any]], port: int) -> None:
    """Each delivery as a raw HTTP/1.1 POST /webhooks/coursesales signed now (Standard Webhooks, the delivery's id),
    preceded by its length in bytes on a line of its own: what wrk_replay.lua sends."""
    from standardwebhooks.webhooks import Webhook

    hook = Webhook(WHSEC)
    now = datetime.now(UTC)
    with path.open("wb") as out:
        for delivery in deliveries:
            raw = json.dumps(delivery)
            head = (
                "POST /webhooks/coursesales HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(raw.encode())}\r\n"
                f"webhook-id: {delivery['id']}\r\n"
                f"webhook-timestamp: {int(now.timestamp())}\r\n"
                f"webhook-signature: {hook.sign(delivery['id'], now, raw)}\r\n\r\n"
            )
            request = (head + raw).encode()
            out.write(f"{len(request)}\n".encode() + request)


async def fresh_stores() -> None:
    """Empty the benchmark's database and Redis database, as a fresh install: TRUNCATE, not DELETE, so that no dead
    rows are left behind, and fresh planner statistics (a benchmark must not time a stale query plan). Refused for
    targets that may be someone's data."""
    _refuse_other_targets()
    from redis.asyncio import Redis
    from sqlalchemy import text
    from sqlmodel import SQLModel

    import app.db.models  # noqa: F401 (registers the tables)
    from app.db.engine import make_engine

    engine = make_engine(PG_URL)
    names = ", ".join(table.name for table in SQLModel.metadata.sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        await conn.execute(text(f"ANALYZE {names}"))
    await engine.dispose()
    redis = Redis.from_url(REDIS_URL)
    await redis.flushdb()
    await redis.aclose()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process and its children (uvicorn's worker processes)."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


@contextmanager
def profiled(pid: int | None) -> Any:
    """With ``BENCH_PROFILE=FILE`` set, py-spy samples process ``pid`` (250 a second, idle threads left out) for the
    block's length and writes its stacks, collapsed, to FILE: how BENCHMARKS.md's profiles were taken. py-spy is
    not a dependency: ``.venv/bin/pip install py-spy``. Without the variable, nothing is run."""
    path = os.environ.get("BENCH_PROFILE")
    if not path or pid is None:
        yield
        return
    spy = Path(sys.executable).with_name("py-spy")
    args = [str(spy), "record", "-p", str(pid), "-o", path, "-f", "raw", "-r", "250", "--nonblocking"]
    sampler = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    try:
        yield
    finally:
        sampler.send_signal(signal.SIGINT)
        sampler.wait(timeout=60)


def machine_busy_seconds() -> float:
    """CPU seconds every core of this machine spent busy (not idle, not waiting for the disk), all processes."""
    import psutil

    times = psutil.cpu_times()
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq"))


def postgres_cpu_seconds() -> float | None:
    """User plus system CPU time of every PostgreSQL process on this machine (None: no local server to read)."""
    import psutil

    total, seen = 0.0, False
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] not in ("postgres", "postmaster"):
            continue
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total, seen = total + times.user + times.system, True
    return total if seen else None


def loop_seconds() -> float:
    """A plain 10,000,000-step Python loop, timed: this machine's speed at the moment (it drifts by a third and more
    within minutes on shared cores), to read the figures beside."""
    started = time.perf_counter()
    for _ in range(10_000_000):
        pass
    return time.perf_counter() - started


def uvicorn_args(app: str, port: int, *, workers: int = 1) -> list[str]:
    """A plain uvicorn serving ``app`` (the baseline of benchmark 1), with uvicorn's own defaults otherwise."""
    args = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    return [*args, "--no-access-log", "--log-level", "warning", "--workers", str(workers)]


def table(rows: list[dict[str, Any]]) -> str:
    # Every benchmark's columns (p99 here, p95 there), the goal a row answers next to last, the notes last.
    seen = list(dict.fromkeys(c for r in rows for c in r))
    cols = [c for c in seen if c not in ("goal", "errors")] + [c for c in ("goal", "errors") if c in seen]
    widths = [max(len(str(c)), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    line = " | ".join(str(c).ljust(w) for c, w in zip(cols, widths, strict=True))
    sep = "-|-".join("-" * w for w in widths)
    body = "\n".join(" | ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths, strict=True)) for r in rows)
    return f"| {line} |\n|-{sep}-|\n" + "\n".join(f"| {b} |" for b in body.splitlines())
