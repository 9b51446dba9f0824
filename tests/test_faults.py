"""Faults with real processes: a killed or stopped worker, Redis going away, a flaky Moodle under load."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.connections import RedisSettings
from arq.worker import Worker
from sqlalchemy import func, select

from app.db.models import OPEN_STATUSES, Event, UserLink
from app.jobs import retry, tasks
from app.jobs.queue import Queue, connect
from app.jobs.redis import redis_settings
from app.jobs.tasks import run_event
from app.jobs.worker import make_worker
from app.runtime import Runtime, build_runtime
from tests.conftest import ON_POSTGRES, TEST_TOKENS
from tests.helpers import end_loops, events, links, make_due, moodle_user, post_contact, process_all, wait_for
from tests.procs import RedisServer, ServedApp, WorkerProcess, worker_env

USERNAME = "jane.doe@example.com"  # tests.helpers.contact()'s, lower-cased


# -- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture
async def api_on_own_redis(runtime: Runtime, own_redis: RedisServer) -> Runtime:
    """The in-process API (the `client` fixture) enqueues on the private Redis."""
    await runtime.queue.close()
    runtime.settings.redis_url = own_redis.url
    runtime.queue = Queue(connect(RedisSettings.from_dsn(own_redis.url)))
    return runtime


@pytest.fixture
def start_worker(
    migrated: str, var_dir: Path, tmp_path: Path, own_redis: RedisServer, served_moodle: ServedApp
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `moodle-sync worker --queue default` subprocesses; any still running at teardown are killed."""
    started: list[WorkerProcess] = []

    def start(**env: Any) -> WorkerProcess:
        settings_env = worker_env(
            database_url=migrated,
            redis_url=own_redis.url,
            moodle_url=served_moodle.url,
            var_dir=var_dir,
            **{k: str(v) for k, v in env.items()},
        )
        worker = WorkerProcess(settings_env, tmp_path / f"worker-{len(started) + 1}.log").start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


# -- helpers ----------------------------------------------------------------------------------------------------


def called(fake: Any, function: str) -> Callable[[], Awaitable[bool]]:
    """A wait_for condition: the fake has received a call of ``function``."""

    async def check() -> bool:
        return any(name == function for name, _ in list(fake.calls))

    return check


def calls_of(fake: Any, function: str) -> int:
    return sum(1 for name, _ in list(fake.calls) if name == function)


def users_named(fake: Any, username: str) -> list[dict[str, Any]]:
    return [u for u in list(fake.users.values()) if u["username"] == username and not u.get("deleted")]


async def statuses(rt: Runtime) -> list[str]:
    return [e.status for e in await events(rt)]


async def open_count(rt: Runtime) -> int:
    async with rt.sessions() as s:
        return int((await s.execute(select(func.count()).where(Event.status.in_(OPEN_STATUSES)))).scalar_one())


def all_done(rt: Runtime) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        found = await statuses(rt)
        return bool(found) and all(s == "done" for s in found)

    return check


# -- a killed worker --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kill_during", "mode", "creates"),
    [
        # Read before the create (users.allow_same_email): nothing written to Moodle yet.
        ("core_user_get_users_by_field", {"SYNC_USERS__ALLOW_SAME_EMAIL": "true"}, 1),
        # Created first (the default): Moodle made the user; the worker never heard back nor recorded the link. The
        # next attempt's create is refused (the username is taken) and the intent says the account is the sync's own.
        ("core_user_create_users", {}, 2),
    ],
)
async def test_sigkill_mid_job_lease_and_sweeper_finish_it(
    kill_during: str,
    mode: dict[str, str],
    creates: int,
    client: httpx.AsyncClient,
    api_on_own_redis: Runtime,
    moodle_fake: Any,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    rt = api_on_own_redis
    moodle_fake.latency = 0.5  # a job of at most three calls: 1.5 s, inside the 3 s lease (= arq's job timeout)
    r = await post_contact(client, "d-kill")
    assert r.status_code == 202 and r.json()["status"] == "queued"
    event_id = r.json()["event_id"]

    first = start_worker(lease_seconds=3, sweep_interval_seconds=1, **mode)
    await wait_for(called(moodle_fake, kill_during), timeout=30)
    assert await asyncio.to_thread(first.kill) == -9
    (event,) = await events(rt)
    assert event.status == "running" and event.attempts == 1, "the dead worker's claim still holds the event"

    second = start_worker(lease_seconds=3, sweep_interval_seconds=1, **mode)
    try:
        await wait_for(all_done(rt), timeout=30)
    except AssertionError:
        raise AssertionError(f"event not done: {await statuses(rt)}\n--- worker 2:\n{second.log_tail()}") from None
    # arq re-runs a killed worker's job only when its in-progress marker expires (job timeout + 10 s): still
    # there, so the run that finished the event is the sweeper's re-queue after our lease expired.
    assert await rt.queue.redis.exists(f"arq:in-progress:event:{event_id}:0") == 1

    (event,) = await events(rt)
    assert event.attempts == 2
    (user,) = users_named(moodle_fake, USERNAME)
    # The user was made once, by one worker (a second create, if any, was refused: the username was taken).
    assert calls_of(moodle_fake, "core_user_create_users") == creates
    assert [(link.username, link.moodle_user_id) for link in await links(rt)] == [(USERNAME, user["id"])]
    assert event.result["moodle_user_id"] == user["id"]


# -- a stopped worker -------------------------------------------------------------------------------------------


async def test_sigterm_lets_the_running_job_finish(
    client: httpx.AsyncClient,
    api_on_own_redis: Runtime,
    moodle_fake: Any,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    rt = api_on_own_redis
    moodle_fake.latency = 3.0  # the job's one call (a new user is created first, issue 22) runs for 3 s
    r = await post_contact(client, "d-term")
    assert r.json()["status"] == "queued"

    worker = start_worker(lease_seconds=30, sweep_interval_seconds=1)
    await wait_for(called(moodle_fake, "core_user_create_users"), timeout=30)
    code = await asyncio.to_thread(worker.terminate, 30)  # raises if the process outlives the deadline

    assert await statuses(rt) == ["done"], f"the job was not let finish\n--- worker:\n{worker.log_tail()}"
    assert code == 0 and "Traceback" not in worker.log_tail(), f"not a clean stop ({code}):\n{worker.log_tail()}"
    assert moodle_user(moodle_fake, USERNAME) is not None


# -- Redis down -------------------------------------------------------------------------------------------------


async def test_redis_down_webhooks_accepted_then_processed(
    client: httpx.AsyncClient, api_on_own_redis: Runtime, own_redis: RedisServer, moodle_fake: Any
) -> None:
    rt = api_on_own_redis
    auth = {"Authorization": f"Bearer {TEST_TOKENS['api']}"}
    # Queued before the outage: the restarted Redis (no persistence) has lost its job.
    r = await post_contact(client, "d-before", contact_id=100, username="before@example.com", email="b@example.com")
    assert r.json()["status"] == "queued"

    await asyncio.to_thread(own_redis.stop, kill=True)
    ready = await client.get("/readyz", headers=auth)
    assert ready.status_code == 200 and ready.json()["checks"]["redis"]["ok"] is False
    for i in range(5):
        kw = {"contact_id": 200 + i, "username": f"down{i}@example.com", "email": f"down{i}@example.com"}
        r = await post_contact(client, f"d-down-{i}", **kw)
        assert r.status_code == 202 and r.json()["status"] == "accepted", r.text
        again = await post_contact(client, f"d-down-{i}", **kw)
        assert again.status_code == 202 and again.json()["duplicate"] is True

    await asyncio.to_thread(own_redis.start)
    rt.settings.jobs.sweep_interval_seconds = 1
    worker = make_worker(rt.settings, runtime=rt, handle_signals=False, poll_delay=0.05)
    task = asyncio.create_task(worker.async_run())
    try:
        # The sweeper leaves a just-accepted event 5 s to its request (GRACE), then queues it.
        await wait_for(all_done(rt), timeout=30)
    finally:
        await stop_worker(worker, task)
    assert len(await events(rt)) == 6
    for name in ["before@example.com", *(f"down{i}@example.com" for i in range(5))]:
        assert len(users_named(moodle_fake, name)) == 1, name


# -- a flaky Moodle under load ----------------------------------------------------------------------------------

FAULT_KINDS = ("500", "503", "timeout", "nonjson", "lost")
DOMAIN = "load.example"


class FlakyMoodle:
    """The Moodle fake behind a seeded fault injector: about ``rate`` of all calls fail.

    "lost" lets Moodle apply the call and then drops the answer (a timeout after the write): the case that
    makes blind retries create a user twice.
    """

    def __init__(self, fake: Any, *, rate: float, seed: int) -> None:
        self.fake = fake
        self.rate = rate
        self.rng = random.Random(seed)
        self.injected: Counter[str] = Counter()
        self.total = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.fake(scope, receive, send)
            return
        self.total += 1
        if self.rng.random() >= self.rate:
            await self.fake(scope, receive, send)
            return
        kind = self.rng.choice(FAULT_KINDS)
        self.injected[kind] += 1
        if kind == "lost":

            async def drop(_message: dict[str, Any]) -> None:
                return None

            await self.fake(scope, receive, drop)
            raise httpx.ReadTimeout("Moodle applied the call; the answer was lost")
        # A 503 makes Moodle "unavailable" for every process until a probe finds it answering (load_workers probes
        # every 0.2 s); the other kinds are the call's own failure, retried.
        self.fake.fail_next(1, kind, retry_after=1)
        await self.fake(scope, receive, send)


def load_plan(seed: int, *, contacts: int, updates: int, redeliveries: int) -> list[dict[str, Any]]:
    """Webhook bodies: each contact's first upsert, later updates interleaved, and repeats of earlier ids."""
    rng = random.Random(seed)
    bodies: list[dict[str, Any]] = []
    versions: dict[int, int] = {}
    fresh = list(range(contacts))
    left = updates
    while fresh or left:
        if versions and left and (not fresh or rng.random() < updates / (contacts + updates)):
            i, left = rng.choice(sorted(versions)), left - 1
            versions[i] += 1
        else:
            i = fresh.pop(0)
            versions[i] = 0
        v = versions[i]
        contact = {
            "contact_id": 10_000 + i,
            "username": f"User{i:04d}@{DOMAIN}",
            "firstname": f"First{i}v{v}",
            "lastname": f"Last{i}v{v}",
            "email": f"user{i:04d}@{DOMAIN}",
            "password": f"S3cret!pass{v % 2}",  # every other update changes the password
            "phone": f"04{i:08d}",
            "active": True,
        }
        bodies.append({"type": "contact.upserted", "id": f"load-{i}-{v}", "contact": contact})
    for _ in range(redeliveries):
        j = rng.randrange(len(bodies))
        bodies.insert(rng.randint(j + 1, len(bodies)), bodies[j])
    return bodies


@dataclass
class LoadRig:
    """The flaky Moodle of a load test and how to start its workers."""

    flaky: FlakyMoodle
    start: Callable[[], list[Worker]]


async def stop_worker(worker: Worker, task: asyncio.Task[Any], *, timeout: float = 20.0) -> None:
    """Close an in-process worker within a deadline (a hung job must fail the test, not hang it)."""
    try:
        async with asyncio.timeout(timeout):
            await worker.close()
    except asyncio.CancelledError:
        # arq's close() gathers the jobs it has just cancelled and re-raises their CancelledError.
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    finally:
        end_loops(worker)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def load_workers(runtime: Runtime, moodle_fake: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LoadRig]:
    """Starts an in-process worker (its own runtime, as a worker process has) on a flaky Moodle, fast retries.

    One worker is enough for overlap: arq runs up to 10 of its jobs at once, each claiming a batch.
    """
    monkeypatch.setattr(retry, "SCHEDULE", (0.2, 0.4, 0.8, 1.0))  # in-process workers: the patch applies
    # arq's job timeout is the lease: a job draining 20 rounds of 100 on this one CPU-starved loop can outlast
    # it and be cut mid-transaction. Fewer rounds per job only moves work to the other jobs (each event has one).
    monkeypatch.setattr(tasks, "MAX_ROUNDS", 3)
    settings = runtime.settings
    settings.jobs.lease_seconds = 6  # a job that died is taken again after this long (also arq's job timeout)
    settings.jobs.sweep_interval_seconds = 1
    settings.moodle.probe_seconds = 0.2
    flaky = FlakyMoodle(moodle_fake, rate=0.2, seed=1234)
    runtimes: list[Runtime] = []
    running: list[tuple[Worker, asyncio.Task[Any]]] = []

    def start() -> list[Worker]:
        rt = build_runtime(settings, moodle_transport=httpx.ASGITransport(app=flaky))
        rt.queue = Queue(connect(redis_settings(settings)))
        runtimes.append(rt)
        worker = make_worker(settings, runtime=rt, handle_signals=False, poll_delay=0.05)
        running.append((worker, asyncio.create_task(worker.async_run())))
        return [w for w, _ in running]

    try:
        yield LoadRig(flaky, start)
    finally:
        for worker, task in running:
            await stop_worker(worker, task)
        for rt in runtimes:
            await rt.close()


async def test_upstream_faults_under_load(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, load_workers: LoadRig
) -> None:
    # The whole load on PostgreSQL (CI); a fifth of it on SQLite, whose writers queue behind one another, so that
    # `make test` on the defaults runs the strongest test too.
    scale = 1 if ON_POSTGRES else 5
    contacts, updates, redeliveries = 700 // scale, 200 // scale, 100 // scale
    bodies = load_plan(7, contacts=contacts, updates=updates, redeliveries=redeliveries)
    assert len(bodies) == contacts + updates + redeliveries
    headers = {"Authorization": f"Bearer {TEST_TOKENS['coursesales']}"}
    gate = asyncio.Semaphore(8)  # a sender with a few deliveries in flight

    async def deliver(body: dict[str, Any]) -> httpx.Response:
        async with gate:
            return await client.post("/webhooks/coursesales", json=body, headers=headers)

    # Delivered before the workers start: API and workers share this one CPU-bound loop, and interleaving
    # them only slows both; the 900 queued jobs then run 10 at a time, so batches still overlap.
    answers = await asyncio.gather(*(deliver(b) for b in bodies))
    assert {r.status_code for r in answers} == {202}
    assert sum(r.json()["duplicate"] for r in answers) == redeliveries
    load_workers.start()
    flaky = load_workers.flaky

    async def settled() -> bool:
        return await open_count(runtime) == 0

    try:
        await wait_for(settled, timeout=90, every=0.25)
    except AssertionError:
        raise AssertionError(f"still open: {Counter(await statuses(runtime))}") from None

    found = await events(runtime)
    assert len(found) == contacts + updates
    not_done = [(e.id, e.status, e.last_error) for e in found if e.status != "done"]
    assert not not_done, f"{len(not_done)} events not done, e.g. {not_done[:5]}"

    ours = [u for u in moodle_fake.users.values() if u["username"].endswith("@" + DOMAIN)]
    assert max(Counter(u["username"] for u in ours).values()) == 1, "no username twice"
    assert {u["username"] for u in ours} == {f"user{i:04d}@{DOMAIN}" for i in range(contacts)}
    assert len(ours) == contacts, "one Moodle user per contact: none made twice, none missing"
    async with runtime.sessions() as s:
        link_rows = list((await s.execute(select(UserLink))).scalars())
    assert sorted((link.contact_id, link.moodle_user_id) for link in link_rows) == sorted(
        (int(u["idnumber"]), u["id"]) for u in ours
    ), "every user linked to its contact; no orphan left by a retried creation"
    # The faults really happened, all kinds of them, at about the rate asked for.
    assert set(flaky.injected) == set(FAULT_KINDS), flaky.injected
    assert 0.1 < sum(flaky.injected.values()) / flaky.total < 0.3


# -- two events of one contact ----------------------------------------------------------------------------------


async def test_older_update_retried_after_newer_one_does_not_overwrite_it(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    moodle_fake.fail_next(1, "500")  # the first event's first call fails alone (a 503 would hold all of Moodle)
    await post_contact(client, "d-v1", firstname="Old")
    await process_all(runtime)
    assert await statuses(runtime) == ["retrying"]
    await post_contact(client, "d-v2", firstname="New")
    await process_all(runtime)  # events of one contact run in order: the newer one waits for the older one
    assert await statuses(runtime) == ["retrying", "queued"]

    await make_due(runtime)
    await process_all(runtime)
    await process_all(runtime)
    assert await statuses(runtime) == ["done", "done"]
    assert moodle_user(moodle_fake, USERNAME)["firstname"] == "New", "the newest data wins"


async def test_two_events_of_one_contact_in_concurrent_jobs(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    runtime.settings.moodle.max_batch = 1  # one event per claim, so the second job can take the second event
    moodle_fake.latency = 0.5  # long against the database work: the second job starts while the first creates
    await post_contact(client, "d-a", firstname="First")
    await post_contact(client, "d-b", firstname="Second")
    first, second = (e.id for e in await events(runtime))

    job1 = asyncio.create_task(run_event(runtime, first))
    # The second job starts once the first holds its event (else, on PostgreSQL, its claim waits and finds none).
    await wait_for(called(moodle_fake, "core_user_create_users"), timeout=10, every=0.01)
    job2 = asyncio.create_task(run_event(runtime, second))
    outcomes = await asyncio.gather(job1, job2, return_exceptions=True)

    crashed = [o for o in outcomes if isinstance(o, BaseException)]
    assert not crashed, f"a job crashed: {crashed!r}"
    assert await statuses(runtime) == ["done", "done"]
    assert len(users_named(moodle_fake, USERNAME)) == 1
    assert moodle_user(moodle_fake, USERNAME)["firstname"] == "Second"


# -- several API processes --------------------------------------------------------------------------------------


async def test_api_with_two_processes_accepts_and_stops_cleanly(
    migrated: str, var_dir: Path, tmp_path: Path, own_redis: RedisServer, runtime: Runtime
) -> None:
    """`moodle-sync api --workers 2`: two processes on one port, each with its own group commit, one inbox."""
    import subprocess

    import psutil

    from tests.procs import free_port, moodle_sync_command

    port = free_port()
    env = worker_env(
        database_url=migrated, redis_url=own_redis.url, moodle_url="http://moodle.invalid", var_dir=var_dir
    )
    log = open(tmp_path / "api.log", "wb")
    proc = subprocess.Popen(  # noqa: S603 (our own CLI)
        [*moodle_sync_command(), "api", "--port", str(port), "--workers", "2"], env=env, stdout=log, stderr=log
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            await wait_for(serving(client), timeout=60)
            answers = await asyncio.gather(*(post_contact(client, f"multi-{i}", contact_id=i + 1) for i in range(20)))
        assert [a.status_code for a in answers] == [202] * 20
        assert len({a.json()["event_id"] for a in answers}) == 20
        assert len(psutil.Process(proc.pid).children()) >= 2  # uvicorn's two worker processes
        assert sorted(e.dedupe_key for e in await events(runtime)) == sorted(f"multi-{i}" for i in range(20))
        assert await Queue(connect(RedisSettings.from_dsn(own_redis.url))).redis.zcard("sync:default") == 20
    finally:
        proc.terminate()
        code = await asyncio.to_thread(proc.wait, 30)
        log.close()
    assert code == 0, (tmp_path / "api.log").read_text()[-2000:]


def serving(client: httpx.AsyncClient) -> Callable[[], Awaitable[bool]]:
    async def up() -> bool:
        try:
            return (await client.get("/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    return up


# -- `moodle-sync serve` stopped ---------------------------------------------------------------------------------


async def test_serve_stopped_by_sigterm_lets_the_running_job_finish_and_exits_0(
    migrated: str,
    var_dir: Path,
    tmp_path: Path,
    own_redis: RedisServer,
    served_moodle: ServedApp,
    moodle_fake: Any,
    runtime: Runtime,
) -> None:
    """API and worker in one process (`make run`): uvicorn raised the stopping signal again once it had stopped, so
    the process died there (status 143), before its workers could let their running jobs finish."""
    import subprocess

    from tests.procs import free_port, moodle_sync_command

    moodle_fake.latency = 3.0  # the job's one call (a new user is created first, issue 22) runs for 3 s
    port = free_port()
    env = worker_env(
        database_url=migrated, redis_url=own_redis.url, moodle_url=served_moodle.url, var_dir=var_dir, lease_seconds=30
    )
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(  # noqa: S603 (our own CLI)
        [*moodle_sync_command(), "serve", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            await wait_for(serving(client), timeout=60)
            assert (await post_contact(client, "d-serve-term")).status_code == 202
        await wait_for(called(moodle_fake, "core_user_create_users"), timeout=30)
        proc.terminate()
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    tail = (tmp_path / "serve.log").read_text()[-2000:]
    assert code == 0 and "Traceback" not in tail, tail
    assert await statuses(runtime) == ["done"], f"the job was not let finish\n{tail}"
    assert moodle_user(moodle_fake, USERNAME) is not None


def test_serve_on_the_embedded_defaults_stops_its_redis_server(tmp_path: Path) -> None:
    """`make run` with nothing configured: a stop ends the embedded redis-server too (it was left running)."""
    import json
    import signal
    import subprocess
    import time

    import psutil

    from tests.procs import free_port, moodle_sync_command

    var = tmp_path / "var"
    env = worker_env(database_url="", redis_url="", moodle_url="", var_dir=var, SYNC_MODE="dev", SYNC_MOODLE__TOKEN="")
    subprocess.run([*moodle_sync_command(), "migrate"], env=env, check=True, capture_output=True)  # noqa: S603
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(  # noqa: S603 (our own CLI)
        [*moodle_sync_command(), "serve", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 60
        while not (var / "redis.rdb.settings").exists() or not _answers(port):
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        pidfile = Path(json.loads((var / "redis.rdb.settings").read_text())["pidfile"])
        redis_pid = int(pidfile.read_text())
        assert psutil.pid_exists(redis_pid)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert code == 0, (tmp_path / "serve.log").read_text()[-2000:]
    deadline = time.monotonic() + 10
    while psutil.pid_exists(redis_pid) and psutil.Process(redis_pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the embedded redis-server outlived the service"
        time.sleep(0.1)


# after: seconds from the start, or None for "the moment the embedded redis-server appears" (before the service
# has installed its own signal handlers: SIGTERM's default action then skipped every clean-up).
@pytest.mark.parametrize(
    ("signum", "after"), [("SIGINT", 0.3), ("SIGINT", None), ("SIGTERM", 0.3), ("SIGTERM", None), ("SIGTERM", 1.0)]
)
def test_a_quick_stop_leaves_no_embedded_redis_server(tmp_path: Path, signum: str, after: float | None) -> None:
    """A stop within a second of `moodle-sync serve` starting (Ctrl-C, or docker stop's SIGTERM) ends the embedded
    redis-server too, wherever start-up had got to, and leaves no temporary folder of its own."""
    import signal
    import subprocess
    import time

    from tests.procs import free_port, moodle_sync_command

    var = tmp_path / "var"
    env = worker_env(database_url="", redis_url="", moodle_url="", var_dir=var, SYNC_MODE="dev", SYNC_MOODLE__TOKEN="")
    subprocess.run([*moodle_sync_command(), "migrate"], env=env, check=True, capture_output=True)  # noqa: S603
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(  # noqa: S603 (our own CLI)
        [*moodle_sync_command(), "serve", "--port", str(free_port())], env=env, stdout=log, stderr=log
    )
    seen: dict[int, Path] = {}
    try:
        deadline = time.monotonic() + (after if after is not None else 30)
        while time.monotonic() < deadline and not (after is None and seen):
            seen |= _redis_servers_in(var)
            time.sleep(0.005)
        proc.send_signal(getattr(signal, signum))
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    seen |= _redis_servers_in(var)
    deadline = time.monotonic() + 10
    while left := [pid for pid in seen if _alive(pid)]:
        tail = (tmp_path / "serve.log").read_text()[-1500:]
        assert time.monotonic() < deadline, f"redis-server {left} outlived the service: {tail}"
        time.sleep(0.1)
    assert not [folder for folder in seen.values() if folder.exists()], "its temporary folder was left behind"


def _redis_servers_in(var: Path) -> dict[int, Path]:
    """redis-server processes working in ``var`` (the embedded server's dir is the service's var dir), with the
    temporary folder of their configuration file."""
    import psutil

    out = {}
    for p in psutil.process_iter(["name", "cwd", "cmdline"]):
        if "redis-server" in (p.info["name"] or "") and p.info["cwd"] == str(var.resolve()):
            config = next((a for a in p.info["cmdline"] or [] if a.endswith(".config")), None)
            out[p.pid] = Path(config).parent if config else var / "no-such-folder"
    return out


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
