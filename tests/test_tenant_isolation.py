"""Every endpoint of /api, and the console's pages, as tenant A (default) asking for tenant B's (beta's) ids: 404 every
time, never B's data, and B's rows unchanged whatever A did. The walk is the OpenAPI document's: an endpoint added
later without a line here fails the test until it is given one."""

from __future__ import annotations

import re
from typing import Any

import httpx
from sqlalchemy import select
from sqlmodel import SQLModel

from app.db.models import (
    Alert,
    Attempt,
    AuditEntry,
    Completion,
    CourseLink,
    DoNotSync,
    EnrolmentLink,
    Event,
    Registration,
    Run,
    UserLink,
)
from app.runtime import Runtime
from tests.conftest import TEST_TOKENS
from tests.test_tenant_hub import BETA, HUB_TOKEN, Two, settings, two  # noqa: F401  (the two tenants' fixtures)

# B's values; an answer may echo what A sent, so a marker A sent is not looked for in that answer.
MARKERS = ("beta-only", "D-BETA-1", "contact:77777", "880001", "880002", "audit-of-b")
A = {"Authorization": f"Bearer {TEST_TOKENS['api']}"}
B = {"Authorization": f"Bearer {BETA['API__TOKEN']}"}


async def _seed_beta(rt: Runtime) -> dict[str, Any]:
    """B's rows, one of every kind an endpoint shows, each carrying a marker."""
    async with rt.sessions() as s:
        failed = Event(
            source="coursesales", kind="contact.upserted", dedupe_key="beta-only-1", body_hash="-",
            subject="contact:77777", payload={"contact": {"email": "beta-only@example.com"}}, status="failed",
            attempts=1, last_error="beta-only error",
        )  # fmt: skip
        review = Event(
            source="moodle", kind="course.completed", dedupe_key="beta-only-2", body_hash="-",
            subject="contact:77777", payload={"note": "beta-only"}, status="needs_review", attempts=1,
            last_error="beta-only review",
        )  # fmt: skip
        run = Run(status="done", counts={"beta-only": 1}, plan=[{"action": "beta-only"}])
        s.add_all([failed, review, run])
        await s.flush()
        s.add_all(
            [
                Attempt(event_id=failed.id, number=1, outcome="failed", error="beta-only error"),
                UserLink(contact_id=77777, username="beta-only-user", moodle_user_id=880001),
                CourseLink(course_date_id=97771, moodle_course_id=880002),
                Registration(document_external_id="D-BETA-1", course_date_id=97771, contact_key="contact:77777"),
                EnrolmentLink(
                    moodle_user_id=880001,
                    moodle_course_id=880002,
                    course_date_id=97771,
                    document_external_id="D-BETA-1",
                ),
                Completion(contact_key="contact:77777", course_date_id=97771, document_external_id="D-BETA-1"),
                AuditEntry(actor="beta-only-operator", action="replay", note="audit-of-b"),
                Alert(cause="event.failed", message="beta-only alert", event_id=failed.id),
                DoNotSync(contact_key="contact:77777", actor="beta-only-operator", note="beta-only"),
            ]
        )
        await s.commit()
        return {"event_id": failed.id, "run_id": run.id}


async def _snapshot(rt: Runtime) -> dict[str, list[dict[str, Any]]]:
    """Every row B owns, as values."""
    from app.db.tenancy import TenantScoped

    out: dict[str, list[dict[str, Any]]] = {}
    async with rt.sessions() as s:
        for model in sorted(_models(TenantScoped), key=lambda m: m.__name__):
            rows = (await s.execute(select(model))).scalars().all()
            out[model.__name__] = sorted((r.model_dump() for r in rows), key=repr)
    return out


def _models(cls: type) -> set[type[SQLModel]]:
    found: set[type[SQLModel]] = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _models(sub)
    return {m for m in found if getattr(m, "__tablename__", None)}


# Each operation of /api (the registry aside): the path's values as A asking for B's ids, and its body.
# "404": the path names one of B's rows, A must not find it; "own": A acting on its own data, which B's must survive.
def _operations(ids: dict[str, Any]) -> dict[tuple[str, str], tuple[dict[str, Any], Any, str]]:
    note = {"note": "tenant A"}
    return {
        ("GET", "/api/attention"): ({}, None, "own"),
        ("POST", "/api/attention/{key}/replay"): ({"key": "event.failed"}, note, "own"),
        ("GET", "/api/audit"): ({}, None, "own"),
        ("GET", "/api/check"): ({}, None, "own"),
        ("POST", "/api/check"): ({}, {"round_trip": False}, "own"),
        ("GET", "/api/checks"): ({}, None, "own"),
        ("GET", "/api/checks/{name}"): ({"name": "database"}, None, "own"),
        ("GET", "/api/contacts/do-not-sync"): ({}, None, "own"),
        ("DELETE", "/api/contacts/{contact}/do-not-sync"): ({"contact": "contact:77777"}, None, "404"),
        ("PUT", "/api/contacts/{contact}/do-not-sync"): ({"contact": "contact:5"}, note, "own"),
        ("GET", "/api/diagnose"): ({}, None, "own"),
        ("GET", "/api/events"): ({}, None, "own"),
        ("GET", "/api/events/per-hour"): ({}, None, "own"),
        ("POST", "/api/events/replay"): ({}, {"status": "failed", "note": "tenant A"}, "own"),
        ("GET", "/api/events/{event_id}"): ({"event_id": ids["event_id"]}, None, "404"),
        ("POST", "/api/events/{event_id}/replay"): ({"event_id": ids["event_id"]}, note, "404"),
        ("POST", "/api/events/{event_id}/resolve"): ({"event_id": ids["event_id"]}, note, "404"),
        ("GET", "/api/links/courses"): ({}, None, "own"),
        ("POST", "/api/links/courses"): ({}, {"course_date_id": 12, "moodle_course_id": 13}, "own"),
        ("DELETE", "/api/links/courses/{course_date_id}"): ({"course_date_id": 97771}, None, "404"),
        ("GET", "/api/links/enrolments"): ({}, None, "own"),
        ("GET", "/api/links/users"): ({}, None, "own"),
        ("POST", "/api/links/users"): ({}, {"username": "a-user", "moodle_user_id": 14}, "own"),
        ("DELETE", "/api/links/users/{moodle_user_id}"): ({"moodle_user_id": 880001}, None, "404"),
        ("GET", "/api/overview"): ({}, None, "own"),
        ("GET", "/api/pause"): ({}, None, "own"),
        ("POST", "/api/pause"): ({}, note, "own"),
        ("POST", "/api/reconcile"): ({}, {"dry_run": True}, "own"),
        ("POST", "/api/resume"): ({}, note, "own"),
        ("GET", "/api/runs"): ({}, None, "own"),
        ("GET", "/api/runs/{run_id}"): ({"run_id": ids["run_id"]}, None, "404"),
        ("GET", "/api/settings"): ({}, None, "own"),
        ("GET", "/api/upstreams"): ({}, None, "own"),
        ("POST", "/api/upstreams/probe"): ({}, None, "own"),
    }


# Lists and searches asked with B's values: found nowhere in A's answers.
SEARCHES = [
    "/api/events?subject=contact:77777",
    "/api/events?document=D-BETA-1",
    "/api/links/users?username=beta-only-user",
    "/api/links/courses?course_date_id=97771",
    "/api/links/enrolments?course_date_id=97771",
    "/api/links/enrolments?moodle_user_id=880001",
    "/api/audit?actor=beta-only-operator",
    "/api/diagnose?contact=77777",  # answered about contact:77777, which it names: A has none of it
    "/api/diagnose?document=D-BETA-1",
    "/api/diagnose?course_date=97771",
]


def _assert_nothing_of_b(answer: httpx.Response, what: str, sent: str = "") -> None:
    assert answer.status_code < 500, (what, answer.status_code, answer.text[:300])
    for marker in MARKERS:
        if marker not in sent:
            assert marker not in answer.text, (what, marker, answer.text[:300])


async def test_every_endpoint_as_a_asking_for_bs_ids_finds_nothing_of_b(two: Two) -> None:  # noqa: F811
    c = two.client
    beta, _ = await two.home.hub.by_slug("beta")
    assert beta is not None
    ids = await _seed_beta(beta)
    # The ids are B's indeed: B's own token, and the hub token for B, find them.
    for headers, query in ((B, ""), ({"Authorization": f"Bearer {HUB_TOKEN}"}, "?tenant=beta")):
        for path in (f"/api/events/{ids['event_id']}", f"/api/runs/{ids['run_id']}"):
            r = await c.get(path + query, headers=headers)
            assert r.status_code == 200 and "beta-only" in r.text, (path, r.text[:200])
    before = await _snapshot(beta)
    schema = (await c.get("/openapi.json")).json()
    documented = {
        (method.upper(), path)
        for path, ops in schema["paths"].items()
        if path.startswith("/api/") and not path.startswith("/api/tenants")
        for method in ops
    }
    operations = _operations(ids)
    assert documented == set(operations), f"give each /api operation a line here: {documented ^ set(operations)}"
    # Reads first (a change of A's own may add A's rows, never B's), then the changes.
    for (method, template), (params, body, expect) in sorted(operations.items(), key=lambda o: o[0][0] != "GET"):
        url = template.format(**params)
        r = await c.request(method, url, headers=A, json=body)
        if expect == "404":
            assert r.status_code == 404, (method, url, r.status_code, r.text[:300])
        _assert_nothing_of_b(r, f"{method} {url}", sent=f"{url} {body}")
    for url in SEARCHES:
        _assert_nothing_of_b(await c.get(url, headers=A), url, sent=url.replace("contact=", "contact=contact:"))
    assert await _snapshot(beta) == before


async def test_the_console_as_a_finds_nothing_of_b(two: Two) -> None:  # noqa: F811
    from app.sync import operators

    c = two.client
    beta, _ = await two.home.hub.by_slug("beta")
    assert beta is not None
    ids = await _seed_beta(beta)
    async with two.home.sessions() as s:
        await operators.add(s, "alice", "a-long-password-for-alice", actor="test")
        await s.commit()
    page = await c.get("/console/sign-in")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token, page.text[:300]
    form = {"csrf": token.group(1), "name": "alice", "password": "a-long-password-for-alice"}
    assert (await c.post("/console/sign-in", data=form)).status_code in (302, 303)
    for path in (f"/console/events/{ids['event_id']}", f"/console/runs/{ids['run_id']}"):
        assert (await c.get(path)).status_code == 404, path
    for path in (
        "/console",
        "/console/events",
        "/console/attention",
        "/console/links",
        "/console/runs",
        "/console/audit",
    ):
        r = await c.get(path)
        assert r.status_code == 200, path
        _assert_nothing_of_b(r, path)
    for search in ("/console/links?q=beta-only-user", "/console/events?q=contact:77777"):
        _assert_nothing_of_b(await c.get(search), search, sent=search)


async def _console_sign_in(c: httpx.AsyncClient, base: str, name: str, password: str) -> httpx.Response:
    page = await c.get(f"{base}/console/sign-in")
    assert page.status_code == 200, (base, page.status_code, page.text[:200])
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token, page.text[:300]
    form = {"csrf": token.group(1), "name": name, "password": password}
    return await c.post(f"{base}/console/sign-in", data=form)


async def test_a_tenant_has_a_console_of_its_own(two: Two) -> None:  # noqa: F811
    from app.sync import operators

    beta, _ = await two.home.hub.by_slug("beta")
    assert beta is not None
    ids = await _seed_beta(beta)
    for rt, password in ((two.home, "a-long-password-for-a"), (beta, "a-long-password-for-b")):
        async with rt.sessions() as s:  # the same name in both tenants: two operators
            await operators.add(s, "alice", password, actor="test")
            await s.commit()
    transport = two.client._transport  # the same app, a second browser
    async with httpx.AsyncClient(transport=transport, base_url="http://sync.test") as b_browser:
        # Not signed in: sent to the tenant's own sign-in page.
        r = await b_browser.get("/t/beta/console/events")
        assert r.status_code == 303 and r.headers["location"].startswith("/t/beta/console/sign-in"), r.headers
        # The other tenant's password for the same name is refused.
        assert (await _console_sign_in(b_browser, "/t/beta", "alice", "a-long-password-for-a")).status_code != 303
        signed = await _console_sign_in(b_browser, "/t/beta", "alice", "a-long-password-for-b")
        assert signed.status_code == 303 and signed.headers["location"].startswith("/t/beta/console")
        assert "Path=/t/beta/console" in signed.headers["set-cookie"]
        page = await b_browser.get(f"/t/beta/console/events/{ids['event_id']}")
        assert page.status_code == 200 and "beta-only" in page.text
        assert 'href="/t/beta/console/events"' in page.text  # its links stay in its console
        # Every page names its tenant (an administrator of several tenants has several consoles open).
        assert '<span class="tenant" title="tenant beta">Beta Training</span>' in page.text
        assert "· Beta Training · moodle-sync</title>" in page.text
        sign_in = await b_browser.get("/t/beta/console/sign-in")
        assert "moodle-sync console: Beta Training</h1>" in sign_in.text
        # Beta's session opens nothing of default's console, cookie copied or not.
        cookies = {name: value for name, value in b_browser.cookies.items()}
        async with httpx.AsyncClient(transport=transport, base_url="http://sync.test", cookies=cookies) as copied:
            r = await copied.get("/console/events")
            assert r.status_code == 303 and r.headers["location"].startswith("/console/sign-in")
    # Default's operator signed in at /console: its cookie does not open beta's console.
    async with httpx.AsyncClient(transport=transport, base_url="http://sync.test") as a_browser:
        assert (await _console_sign_in(a_browser, "", "alice", "a-long-password-for-a")).status_code == 303
        assert 'class="tenant"' not in (await a_browser.get("/console/events")).text  # default's console: no name
        cookies = {name: value for name, value in a_browser.cookies.items()}
        async with httpx.AsyncClient(transport=transport, base_url="http://sync.test", cookies=cookies) as copied:
            r = await copied.get("/t/beta/console/events")
            assert r.status_code == 303 and "/t/beta/console/sign-in" in r.headers["location"]
    assert (await two.client.get("/t/nope/console")).status_code == 404
