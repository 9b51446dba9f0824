"""Two tenants, each with its own Moodle and CourseSales fakes, driven at once through one deployment: each one's
users, courses, enrolments and completions land only in its own systems; its URLs take its own credentials only;
the classic compat URL finds the tenant from its wstoken; a disabled tenant is refused and nothing runs for it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select, update
from sqlmodel import col

from app.db import leases
from app.db.models import OPEN_STATUSES, Event, EventStatus, Lease, Run
from app.db.tenancy import ALL_TENANTS
from app.db.types import utcnow
from app.jobs import tasks
from app.jobs.queue import Queue, connect
from app.jobs.redis import redis_settings
from app.runtime import Runtime, build_runtime
from app.settings import Settings
from tests.conftest import TEST_TOKENS, app_client, make_settings
from tests.fakes.coursesales import CourseSalesFake
from tests.fakes.moodle import MoodleFake
from tests.helpers import contact
from tests.test_compat_endpoint import export_map_form
from tests.test_completions import STEP, local_webhooks_body

HUB_TOKEN = "hub-token-for-the-two-tenants"
CD, DOCUMENT = 9500, "D-1001"  # the same ids in both accounts: each tenant's are its own
BETA = {
    "MOODLE__TOKEN": "beta-moodle-ws-token-0001",
    "COURSESALES__PASSWORD": "BETA_PASSWORD",
    "WEBHOOKS__COURSESALES_TOKEN": "beta-coursesales-token-0001",
    "WEBHOOKS__MOODLE_TOKEN": "beta-moodle-hook-token-0001",
    "COMPAT__WSTOKEN": "beta-compat-wstoken-00001",
    "API__TOKEN": "beta-api-token-0000000001",
}


class HostRouter(httpx.AsyncBaseTransport):
    """One transport for several fakes, chosen by the request's host (each tenant's Moodle has its own URL)."""

    def __init__(self, apps: dict[str, Any]) -> None:
        self.transports = {host: httpx.ASGITransport(app=app) for host, app in apps.items()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.transports[request.url.host].handle_async_request(request)


@dataclass
class Two:
    home: Runtime
    client: httpx.AsyncClient
    moodle: dict[str, MoodleFake]
    coursesales: dict[str, CourseSalesFake]


@pytest.fixture
def settings(migrated: str, var_dir: Path) -> Settings:
    return make_settings(migrated, var_dir, hub={"token": SecretStr(HUB_TOKEN)}, completion={"process_step_id": STEP})


@pytest.fixture
async def two(settings: Settings, clean_db: None) -> AsyncIterator[Two]:
    moodle = {"default": MoodleFake(token="test-token"), "beta": MoodleFake(token=BETA["MOODLE__TOKEN"])}
    coursesales = {"default": CourseSalesFake(), "beta": CourseSalesFake("BETA_USER", "BETA_PASSWORD")}
    for fake in coursesales.values():
        fake.add_category(500, "First Aid", moodle_category_id="2")
        today = datetime.now(UTC).date()
        fake.add_course_date(CD, today - timedelta(days=3), today + timedelta(days=3), 500)
    home = build_runtime(
        settings,
        moodle_transport=HostRouter({"moodle.test": moodle["default"], "moodle-b.test": moodle["beta"]}),
        coursesales_transport=HostRouter(
            {"coursesales.test": coursesales["default"], "coursesales-b.test": coursesales["beta"]}
        ),
    )
    home.queue = Queue(connect(redis_settings(settings)))
    await home.queue.redis.flushdb()
    async with app_client(home) as client:
        r = await client.post(
            "/api/tenants",
            headers={"Authorization": f"Bearer {HUB_TOKEN}"},
            json={
                "slug": "beta",
                "name": "Beta Training",
                "config": {
                    "moodle": {"url": "http://moodle-b.test"},
                    "coursesales": {"url": "http://coursesales-b.test", "username": "BETA_USER"},
                    "completion": {"process_step_id": STEP},
                },
                "secrets": BETA,
            },
        )
        assert r.status_code == 201, r.text
        yield Two(home, client, moodle, coursesales)
    await home.close()


async def drain(home: Runtime) -> None:
    """What the workers would do: run the job of every tenant's open event, until none is left."""
    for _ in range(8):
        async with home.sessions() as s:
            rows = (await s.execute(select(Event).execution_options(**ALL_TENANTS))).scalars().all()
            await s.execute(
                update(Event)
                .where(col(Event.status) == EventStatus.retrying)
                .values(next_attempt_at=utcnow() - timedelta(seconds=1))
                .execution_options(synchronize_session=False, **ALL_TENANTS)
            )
            await s.commit()
        open_ids = [e.id for e in rows if e.status in OPEN_STATUSES]
        if not open_ids:
            return
        for event_id in open_ids:
            await tasks.process_event({"runtime": home}, event_id)


def registration(delivery_id: str) -> dict[str, Any]:
    from app.events.examples import coursesales_example

    body = coursesales_example("registration.registered") | {"id": delivery_id}
    body["registration"].update(document_external_id=DOCUMENT, course_date_id=CD, contact=contact())
    return body


def compat_form(token: str, **user: str) -> dict[str, str]:
    return export_map_form(**user) | {"wstoken": token, "moodlewsrestformat": "json"}


def cs_auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def enrolled(fake: MoodleFake) -> list[tuple[str, str]]:
    """(username, course idnumber) of every enrolment in this Moodle."""
    users = {u["id"]: u["username"] for u in fake.users.values()}
    courses = {c["id"]: str(c.get("idnumber")) for c in fake.courses.values()}
    return sorted((users[u], courses[c]) for (u, c) in fake.state.enrolments)


async def test_each_tenants_work_lands_in_its_own_systems_only(two: Two) -> None:
    c = two.client
    # Both at once: default at the classic URL, beta at its own, the same delivery id, Document and course date.
    a, b = await asyncio.gather(
        c.post("/webhooks/coursesales", json=registration("d-1"), headers=cs_auth(TEST_TOKENS["coursesales"])),
        c.post(
            "/t/beta/webhooks/coursesales",
            json=registration("d-1"),
            headers=cs_auth(BETA["WEBHOOKS__COURSESALES_TOKEN"]),
        ),
    )
    assert a.status_code == b.status_code == 202 and not a.json()["duplicate"] and not b.json()["duplicate"]
    assert a.json()["event_id"] != b.json()["event_id"]
    await drain(two.home)
    for name in ("default", "beta"):
        assert enrolled(two.moodle[name]) == [("jane.doe@example.com", str(CD))], name
    # Completions, each through its own tenant's Moodle webhook, each to its own CourseSales.
    for name, path, token in (
        ("default", "/webhooks/moodle", TEST_TOKENS["moodle"]),
        ("beta", "/t/beta/webhooks/moodle", BETA["WEBHOOKS__MOODLE_TOKEN"]),
    ):
        fake = two.moodle[name]
        user = next(u["id"] for u in fake.users.values() if u["username"] == "jane.doe@example.com")
        course = next(x for x in fake.courses.values() if str(x.get("idnumber")) == str(CD))
        course["criteria"], course["enablecompletion"] = [1], 1
        fake.mark_complete(user, course["id"])
        body = local_webhooks_body("local_webhooks_course_completed.json", user, course["id"], token)
        r = await c.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    await drain(two.home)
    for name in ("default", "beta"):
        assert [s for s in two.coursesales[name].steps if s[1] == STEP] == [(DOCUMENT, STEP)], name


async def test_a_tenants_credential_never_opens_anothers_url(two: Two) -> None:
    c = two.client
    wrong = [
        ("/webhooks/coursesales", BETA["WEBHOOKS__COURSESALES_TOKEN"]),
        ("/t/beta/webhooks/coursesales", TEST_TOKENS["coursesales"]),
    ]
    for path, token in wrong:
        r = await c.post(path, json=registration("d-x"), headers=cs_auth(token))
        assert r.status_code == 401, (path, r.text)
    assert (await c.post("/t/nope/webhooks/coursesales", json={}, headers=cs_auth(token))).status_code == 404
    # The ops API: each tenant's token shows its own events only, the other's ids are not found.
    await c.post("/webhooks/coursesales", json=registration("d-2"), headers=cs_auth(TEST_TOKENS["coursesales"]))
    r = await c.post(
        "/t/beta/webhooks/coursesales", json=registration("d-2"), headers=cs_auth(BETA["WEBHOOKS__COURSESALES_TOKEN"])
    )
    beta_event = r.json()["event_id"]
    # The deployment's monitor counts every tenant's open events.
    scraped = (await c.get("/metrics", headers=cs_auth(TEST_TOKENS["api"]))).text
    assert 'sync_events{status="queued"} 2.0' in scraped
    # Each tenant's open events, labelled by the registry's slugs alone.
    assert 'sync_tenant_open_events{tenant="beta"} 1.0' in scraped
    assert 'sync_tenant_open_events{tenant="default"} 1.0' in scraped
    mine = await c.get("/api/events", headers=cs_auth(BETA["API__TOKEN"]))
    assert [e["id"] for e in mine.json()["items"]] == [beta_event]
    assert (await c.get(f"/api/events/{beta_event}", headers=cs_auth(TEST_TOKENS["api"]))).status_code == 404
    hub = await c.get(f"/api/events/{beta_event}?tenant=beta", headers=cs_auth(HUB_TOKEN))
    assert hub.status_code == 200 and hub.json()["id"] == beta_event
    # The audit says who acted (the hub's token, the tenant's own) and is the tenant's.
    await c.post("/api/pause?tenant=beta", headers=cs_auth(HUB_TOKEN), json={"note": "by the hub"})
    await c.post("/api/resume", headers=cs_auth(BETA["API__TOKEN"]), json={"note": "by beta"})
    trail = (await c.get("/api/audit", headers=cs_auth(BETA["API__TOKEN"]))).json()["items"]
    assert [(a["actor"], a["action"]) for a in trail][:2] == [("api", "resume"), ("hub", "pause")]
    assert "pause" not in [
        a["action"] for a in (await c.get("/api/audit", headers=cs_auth(TEST_TOKENS["api"]))).json()["items"]
    ]


async def test_the_classic_compat_url_finds_the_tenant_from_its_wstoken(two: Two) -> None:
    c = two.client
    for token, username in ((TEST_TOKENS["compat"], "ann@example.com"), (BETA["COMPAT__WSTOKEN"], "bob@example.com")):
        form = compat_form(token, username=username, email=username)
        r = await c.post("/webservice/rest/server.php", data=form)
        assert r.status_code == 200 and "exception" not in r.text, r.text
    # The same through beta's own URL; its token does not open default's.
    form = compat_form(BETA["COMPAT__WSTOKEN"], username="cat@example.com", email="cat@example.com")
    assert "exception" not in (await c.post("/t/beta/webservice/rest/server.php", data=form)).text
    form["wstoken"] = TEST_TOKENS["compat"]
    assert json.loads((await c.post("/t/beta/webservice/rest/server.php", data=form)).text)["errorcode"] == (
        "invalidtoken"
    )
    await drain(two.home)
    assert sorted(u["username"] for u in two.moodle["default"].users.values() if "@" in u["username"]) == [
        "ann@example.com"
    ]
    assert sorted(u["username"] for u in two.moodle["beta"].users.values() if "@" in u["username"]) == [
        "bob@example.com",
        "cat@example.com",
    ]


async def test_a_disabled_tenant_is_refused_and_nothing_runs_for_it(two: Two) -> None:
    c = two.client
    r = await c.post(
        "/t/beta/webhooks/coursesales", json=registration("d-3"), headers=cs_auth(BETA["WEBHOOKS__COURSESALES_TOKEN"])
    )
    waiting = r.json()["event_id"]
    hub = {"Authorization": f"Bearer {HUB_TOKEN}"}
    assert (await c.post("/api/tenants/beta/disable", headers=hub)).status_code == 200
    two.home.hub.recheck()  # another process's change reaches this one within FRESH_SECONDS; here at once
    r = await c.post(
        "/t/beta/webhooks/coursesales", json=registration("d-4"), headers=cs_auth(BETA["WEBHOOKS__COURSESALES_TOKEN"])
    )
    assert r.status_code == 403 and "disabled" in r.json()["detail"]
    form = compat_form(BETA["COMPAT__WSTOKEN"])
    for path in ("/webservice/rest/server.php", "/t/beta/webservice/rest/server.php"):
        r = await c.post(path, data=form)
        assert r.status_code == 200 and json.loads(r.text)["errorcode"] == "invalidtoken", path
    assert (await c.get("/api/events", headers=cs_auth(BETA["API__TOKEN"]))).status_code == 403
    assert await tasks.process_event({"runtime": two.home}, waiting) == "tenant disabled"
    await drain(two.home)
    assert two.moodle["beta"].users == {} or all("@" not in u["username"] for u in two.moodle["beta"].users.values())
    async with two.home.sessions() as s:
        every = (await s.execute(select(Event).execution_options(**ALL_TENANTS))).scalars().all()
    assert [(e.id, e.status) for e in every] == [(waiting, "queued")]  # kept, not run, nothing new taken in
    # Enabled again, its waiting work runs.
    assert (await c.post("/api/tenants/beta/enable", headers=hub)).status_code == 200
    two.home.hub.recheck()
    await drain(two.home)
    assert enrolled(two.moodle["beta"]) == [("jane.doe@example.com", str(CD))]


async def test_removing_a_tenant_deletes_its_data_and_nothing_else(two: Two) -> None:
    c = two.client
    await c.post("/webhooks/coursesales", json=registration("d-5"), headers=cs_auth(TEST_TOKENS["coursesales"]))
    await c.post(
        "/t/beta/webhooks/coursesales", json=registration("d-5"), headers=cs_auth(BETA["WEBHOOKS__COURSESALES_TOKEN"])
    )
    await drain(two.home)
    hub = {"Authorization": f"Bearer {HUB_TOKEN}"}
    before = await _rows_by_tenant(two.home)
    beta = two.home.hub.held()[0].tenant_id
    assert {t for t, _ in before} == {0, beta}
    assert (await c.delete("/api/tenants/beta?confirm=beta", headers=hub)).status_code == 200
    after = await _rows_by_tenant(two.home)
    # Default's rows all stay; the one more is the hub's audit of the removal (the registry's trail is the hub's).
    kept = {(t, table): n for (t, table), n in before.items() if t == 0}
    assert after == kept | {(0, "audit"): kept[(0, "audit")] + 1}
    assert after[(0, "events")] >= 1 and after[(0, "user_links")] == 1


async def _rows_by_tenant(home: Runtime) -> dict[tuple[int, str], int]:
    from sqlalchemy import func
    from sqlmodel import SQLModel

    out: dict[tuple[int, str], int] = {}
    async with home.engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            if "tenant_id" in table.c and table.name != "tenant_credentials":
                rows = await conn.execute(select(table.c.tenant_id, func.count()).group_by(table.c.tenant_id))
                out.update({(t, table.name): n for t, n in rows})
    return out


async def test_each_tenants_alerts_go_to_its_own_recipients(two: Two) -> None:
    from app.notify import alerts
    from tests.smtp_inbox import Inbox

    inbox = Inbox()
    inbox.start()
    try:
        mail = {"smtp_host": "127.0.0.1", "smtp_port": inbox.port, "smtp_tls": "none", "sender": "sync@example.com"}
        home = two.home.settings.alerts
        home.smtp_host, home.smtp_port, home.smtp_tls = "127.0.0.1", inbox.port, "none"
        home.sender, home.recipients = "sync@example.com", ["ops@default.example"]
        r = await two.client.patch(
            "/api/tenants/beta",
            headers={"Authorization": f"Bearer {HUB_TOKEN}"},
            json={"config": {"alerts": {**mail, "recipients": ["ops@beta.example"]}}},
        )
        assert r.status_code == 200, r.text
        two.home.hub.recheck()
        beta, _ = await two.home.hub.by_slug("beta")
        assert beta is not None
        for rt, text in ((two.home, "default's Moodle refused"), (beta, "beta's Moodle refused")):
            async with rt.sessions() as s:
                await alerts.raise_alert(s, cause="event.failed", message=text)
                await s.commit()
        loop = asyncio.create_task(alerts.run_forever(two.home, every_seconds=0.01))
        try:
            for _ in range(500):
                if len(inbox.messages) >= 2:
                    break
                await asyncio.sleep(0.01)
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
        sent = {str(m["To"]): m.get_content() for m in inbox.messages}
        assert set(sent) == {"ops@default.example", "ops@beta.example"}
        assert "default's Moodle refused" in sent["ops@default.example"]
        assert "beta's" not in sent["ops@default.example"]
        assert "beta's Moodle refused" in sent["ops@beta.example"]
        assert "default's" not in sent["ops@beta.example"]
    finally:
        inbox.stop()


async def test_the_probe_and_the_periodic_reconcile_walk_every_tenant(two: Two) -> None:
    from app.db.models import Run
    from app.jobs import probe, reconcile
    from app.sync import upstreams

    beta, _ = await two.home.hub.by_slug("beta")
    assert beta is not None
    async with beta.sessions() as s:  # beta's Moodle was found away; default's is fine
        await upstreams.mark(s, upstreams.Fault(upstreams.MOODLE, upstreams.UNAVAILABLE, "beta's Moodle is down"))
        # Beta's last periodic turn is over: the next is due now (a tenant's first is placed within its interval).
        await leases.acquire(s, "reconcile.cron", "earlier", 0.001)
        await s.commit()
    await asyncio.sleep(0.01)
    loops = [
        asyncio.create_task(probe.run_forever(two.home)),
        asyncio.create_task(reconcile.run_tenants_periodically(two.home, tick_seconds=0.01)),
    ]
    try:
        for _ in range(500):
            async with beta.sessions() as s:
                state = (await upstreams.load(s))[upstreams.MOODLE].state
                runs = (await s.execute(select(Run))).scalars().all()
            if state == upstreams.OK and runs and runs[0].status == "done":
                break
            await asyncio.sleep(0.02)
    finally:
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
    assert state == upstreams.OK  # probed in beta's Moodle, recorded as beta's
    assert [(r.trigger, r.status) for r in runs] == [("cron", "done")]  # beta's own periodic run
    async with two.home.sessions() as s:
        assert (await s.execute(select(Run))).first() is None  # default's keeps its own interval
        assert upstreams.MOODLE not in await upstreams.load(s)


async def test_metrics_name_each_tenants_upstream_that_cannot_be_used(two: Two) -> None:
    """sync_upstream_state is the default tenant's, every state; sync_tenant_upstream_problem has one series for
    each tenant's upstream that cannot be used now, and none for a usable one."""
    from app.sync import upstreams

    beta, _ = await two.home.hub.by_slug("beta")
    assert beta is not None
    async with beta.sessions() as s:
        await upstreams.mark(s, upstreams.Fault(upstreams.MOODLE, upstreams.AUTH_FAILED, "beta's token was revoked"))
        await s.commit()
    scraped = (await two.client.get("/metrics", headers=cs_auth(TEST_TOKENS["api"]))).text
    problems = [line for line in scraped.splitlines() if line.startswith("sync_tenant_upstream_problem{")]
    assert problems == ['sync_tenant_upstream_problem{state="auth_failed",tenant="beta",upstream="moodle"} 1.0']
    assert 'sync_upstream_state{state="ok",upstream="moodle"} 1.0' in scraped, "default's Moodle, as before"
    async with beta.sessions() as s:
        await upstreams.mark_ok(s, upstreams.MOODLE)
        await s.commit()
    scraped = (await two.client.get("/metrics", headers=cs_auth(TEST_TOKENS["api"]))).text
    assert not [line for line in scraped.splitlines() if line.startswith("sync_tenant_upstream_problem{")]


async def test_a_tenant_url_while_the_database_does_not_answer_is_sent_again(var_dir: Path) -> None:
    down = build_runtime(make_settings("postgresql+asyncpg://postgres@127.0.0.1:1/none", var_dir))
    try:
        async with app_client(down) as c:
            r = await c.post("/t/beta/webhooks/coursesales", json={}, headers=cs_auth("x" * 20))
            assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
            # A token that is not the file's cannot be looked up: refused, as any unknown token.
            assert (await c.get("/api/events", headers=cs_auth("y" * 20))).status_code == 401
    finally:
        await down.close()


async def test_a_tenant_past_its_deliveries_a_second_is_asked_to_wait_and_nothing_answered_is_lost(two: Two) -> None:
    c = two.client
    two.home.settings.hub.intake_per_second = 5
    beta_token = cs_auth(BETA["WEBHOOKS__COURSESALES_TOKEN"])
    answers = await asyncio.gather(
        *(
            c.post("/t/beta/webhooks/coursesales", json=registration(f"burst-{n}"), headers=beta_token)
            for n in range(12)
        )
    )
    accepted = [r.json()["event_id"] for r in answers if r.status_code == 202]
    limited = [r for r in answers if r.status_code == 429]
    assert len(accepted) == 5 and len(limited) == 7, [r.status_code for r in answers]
    assert all(r.headers["retry-after"] == "1" and "send again" in r.json()["detail"] for r in limited)
    beta, _ = await two.home.hub.by_slug("beta")
    assert beta is not None
    async with beta.sessions() as s:  # every delivery answered 202 is stored, no other
        assert sorted((await s.execute(select(col(Event.id)))).scalars()) == sorted(accepted)
    # The export map's wstoken finds the same tenant, and the same limit.
    r = await c.post("/webservice/rest/server.php", data=compat_form(BETA["COMPAT__WSTOKEN"]))
    assert r.status_code == 429
    # The default tenant, the file's own, has no limit; after a second, beta's deliveries come in again.
    default_answers = await asyncio.gather(
        *(
            c.post(
                "/webhooks/coursesales", json=registration(f"burst-{n}"), headers=cs_auth(TEST_TOKENS["coursesales"])
            )
            for n in range(12)
        )
    )
    assert {r.status_code for r in default_answers} == {202}
    await asyncio.sleep(1.1)
    r = await c.post("/t/beta/webhooks/coursesales", json=registration("after"), headers=beta_token)
    assert r.status_code == 202


def test_the_intake_bucket_refills_at_its_rate() -> None:
    from app.intake_limit import IntakeLimit

    now = [100.0]
    limit = IntakeLimit(clock=lambda: now[0])
    assert [limit.wait(7, 2) for _ in range(3)] == [0, 0, 1]
    now[0] += 0.5  # half a second: one more
    assert [limit.wait(7, 2), limit.wait(7, 2)] == [0, 1]
    assert limit.wait(8, 2) == 0  # another tenant's bucket is its own
    assert limit.wait(7, 0) == 0  # 0: no limit


async def test_the_intake_limit_is_one_for_every_api_process_and_kept_alone_while_redis_is_down(
    runtime: Runtime,
) -> None:
    """`moodle-sync api --workers N`, or hosts behind one address: the bucket is the deployment's, in the queue's
    Redis, so two processes together let in a tenant's deliveries a second, not twice that. A Redis that does not
    answer refuses nothing for it: each process keeps its own bucket, and says so once."""
    from structlog.testing import capture_logs

    from app.intake_limit import IntakeLimit

    assert runtime.queue is not None
    redis = runtime.queue.redis
    first, second = IntakeLimit(), IntakeLimit()  # two API processes
    answers = [await (first if n % 2 else second).admit(9, 4, redis) for n in range(8)]
    assert answers.count(0) == 4 and answers[-1] == 1, answers
    assert await first.admit(10, 4, redis) == 0, "another tenant's bucket is its own"

    calls = []

    class Down:
        def register_script(self, _script: str) -> Any:
            async def call(**_kw: Any) -> int:
                calls.append(1)
                raise ConnectionError("Redis does not answer")

            return call

    now = [100.0]
    alone = IntakeLimit(clock=lambda: now[0])
    with capture_logs() as logs:
        assert [await alone.admit(9, 2, Down()) for _ in range(3)] == [0, 0, 1]
    assert [entry["event"] for entry in logs].count("intake.limit.local") == 1
    assert len(calls) == 1, "after a failure the next deliveries do not wait for Redis, each"
    now[0] += 6  # past LOCAL_SECONDS: Redis is asked again
    await alone.admit(9, 2, Down())
    assert len(calls) == 2


async def test_a_thousand_quiet_tenants_start_no_task_and_hold_no_upstream_client(two: Two) -> None:
    """Registered tenants cost nothing per tenant at start-up: no task, timer or connection each; the loops walk
    the tenants that have something to do (and, spread over an hour, each one's silence check)."""
    from app.db.tenants import Tenant
    from app.jobs import probe, reconcile
    from app.notify import alerts

    async with two.home.sessions() as s:
        s.add_all([Tenant(slug=f"quiet-{n}", name=f"Quiet {n}") for n in range(1000)])
        await s.commit()
    beta_rt, _ = await two.home.hub.by_slug("beta")
    assert beta_rt is not None
    before = len(asyncio.all_tasks())
    loops = [
        asyncio.create_task(alerts.run_forever(two.home, every_seconds=0.05)),
        asyncio.create_task(probe.run_forever(two.home)),
        asyncio.create_task(reconcile.run_tenants_periodically(two.home, tick_seconds=0.05)),
    ]
    try:
        leased, most_tasks = 0, 0
        started = time.monotonic()
        while leased < 1001 and time.monotonic() - started < 60:
            await asyncio.sleep(0.1)
            most_tasks = max(most_tasks, len(asyncio.all_tasks()))
            async with two.home.sessions() as s:
                leased = (
                    await s.execute(
                        select(func.count()).select_from(Lease).where(col(Lease.name) == "reconcile.cron")
                        .execution_options(**ALL_TENANTS)
                    )
                ).scalar_one()  # fmt: skip
        # The periodic reconcile looked at each tenant once (none can run: no Moodle, no CourseSales) and took its
        # turn for the hour, beta's too...
        assert leased == 1001
        # ...without a task per tenant (a thousand would show: the loops, at most a passing database close or two)...
        assert most_tasks < before + len(loops) + 10
        # ...and beta, which could run, has its first turn placed within its interval, not now...
        async with beta_rt.sessions() as s:
            assert (await s.execute(select(Run))).first() is None
        # ...nor an upstream client for any of them.
        held = two.home.hub.held()
        assert all(rt._clients is None for rt in held if rt.slug.startswith("quiet-")), "a quiet tenant's client"
        # Quiet for a while, their runtimes are closed.
        assert await two.home.hub.forget_quiet(quiet_seconds=0) >= 1000
        assert two.home.hub.held() == []
    finally:
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)


async def test_a_tenants_read_token_reads_its_own_data_and_changes_nothing(two: Two) -> None:
    hub = {"Authorization": f"Bearer {HUB_TOKEN}"}
    read_token = "beta-read-token-000000001"
    r = await two.client.patch("/api/tenants/beta", headers=hub, json={"secrets": {"API__READ_TOKEN": read_token}})
    assert r.status_code == 200, r.text
    two.home.hub.recheck()
    c = two.client
    r = await c.post(
        "/t/beta/webhooks/coursesales", json=registration("r-1"), headers=cs_auth(BETA["WEBHOOKS__COURSESALES_TOKEN"])
    )
    beta_event = r.json()["event_id"]
    reader = cs_auth(read_token)
    assert (await c.get(f"/api/events/{beta_event}", headers=reader)).status_code == 200
    refused = await c.post("/api/pause", headers=reader, json={"note": "not allowed"})
    assert refused.status_code == 403 and "read-only" in refused.json()["detail"]
    beta, _ = await two.home.hub.by_slug("beta")
    assert beta is not None
    async with beta.sessions() as s:
        from app.sync import operations

        assert await operations.paused(s) is None
