"""The console's sign-in and session rules over HTTP (the browser tests, tests/browser, drive the pages): the
cookie's flags, sessions ended by a removal or a new password, the sign-in form's own token, the wrong-password
limit shared by every API process through Redis, no open redirect, CSRF and viewers on every change."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

from app.console import throttle
from app.db.models import AuditEntry
from app.db.statuses import OperatorRole
from app.http_server import limits
from app.jobs.queue import Queue, connect
from app.jobs.redis import redis_settings
from app.runtime import Runtime, build_runtime
from app.settings import ApiSettings
from app.sync import operators
from tests.conftest import app_client

PASSWORD = "a long enough password"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def _operator(rt: Runtime, name: str, role: OperatorRole = OperatorRole.admin) -> None:
    async with rt.sessions() as s:
        await operators.add(s, name, PASSWORD, role=role, actor="test")
        await s.commit()


async def _form_token(client: httpx.AsyncClient, path: str = "/console/sign-in") -> str:
    page = await client.get(path)
    found = CSRF.search(page.text)
    assert found, page.text[:500]
    return found.group(1)


async def _sign_in(client: httpx.AsyncClient, name: str, password: str = PASSWORD, **extra: str) -> httpx.Response:
    token = await _form_token(client)
    return await client.post("/console/sign-in", data={"name": name, "password": password, "csrf": token, **extra})


@pytest.fixture
async def https_client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(runtime, "https://sync.test") as c:
        yield c


async def test_signing_in_sets_a_strict_http_only_cookie_secure_over_https(
    runtime: Runtime, client: httpx.AsyncClient, https_client: httpx.AsyncClient
) -> None:
    await _operator(runtime, "alice")
    plain = await _sign_in(client, "alice")
    assert plain.status_code == 303 and plain.headers["location"] == "/console"
    cookie = plain.headers["set-cookie"]
    assert "csms_console=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/console" in cookie and "Max-Age=43200" in cookie  # console.session_hours, 12 by default
    assert "Secure" not in cookie
    secure = await _sign_in(https_client, "alice")
    assert "Secure" in secure.headers["set-cookie"]
    assert (await client.get("/console/events")).status_code == 200


def test_the_server_believes_forwarded_headers_from_the_trusted_proxies_only() -> None:
    assert limits(ApiSettings())["forwarded_allow_ips"] == "127.0.0.1"
    assert limits(ApiSettings(trusted_proxies=["10.0.0.0/8", "192.0.2.7"]))["forwarded_allow_ips"] == (
        "10.0.0.0/8,192.0.2.7"
    )


async def test_without_a_session_pages_send_to_the_sign_in_and_parts_say_so_to_htmx(client: httpx.AsyncClient) -> None:
    page = await client.get("/console/events?status=failed")
    assert page.status_code == 303
    assert page.headers["location"] == "/console/sign-in?next=/console/events%3Fstatus%3Dfailed"
    part = await client.get("/console/checks/database", headers={"HX-Request": "true"})
    assert part.status_code == 401 and part.headers["hx-redirect"].startswith("/console/sign-in")
    client.cookies.set("csms_console", '["alice", 1, "token"].forged-signature', path="/console")
    assert (await client.get("/console")).status_code == 303


@pytest.mark.parametrize("action", ["remove", "passwd"])
async def test_removing_an_operator_or_changing_the_password_ends_their_sessions(
    runtime: Runtime, client: httpx.AsyncClient, action: str
) -> None:
    await _operator(runtime, "alice")
    await _sign_in(client, "alice")
    assert (await client.get("/console")).status_code == 200
    async with runtime.sessions() as s:
        if action == "remove":
            await operators.remove(s, "alice", actor="test")
        else:
            await operators.change_password(s, "alice", "a brand new password", actor="test")
        await s.commit()
    assert (await client.get("/console")).status_code == 303


async def test_the_sign_in_form_needs_its_own_token(runtime: Runtime, client: httpx.AsyncClient) -> None:
    await _operator(runtime, "alice")
    refused = await client.post("/console/sign-in", data={"name": "alice", "password": PASSWORD, "csrf": "x"})
    assert refused.status_code == 403 and "csms_console=" not in refused.headers.get("set-cookie", "")


async def test_the_next_page_after_signing_in_is_on_this_console_only(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    await _operator(runtime, "alice")
    for target, expected in [("/console/runs", "/console/runs"), ("https://evil.example/", "/console"),
                             ("//evil.example/console", "/console"), ("/console\\@evil", "/console")]:  # fmt: skip
        answer = await _sign_in(client, "alice", next=target)
        assert answer.headers["location"] == expected, target


async def test_five_wrong_passwords_slow_that_name_down_in_every_process(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    await _operator(runtime, "alice")
    for _ in range(throttle.MAX_FAILURES):
        assert (await _sign_in(client, "alice", "wrong password!")).status_code == 401
    # A second API process, on the same Redis: the count is shared, and the right password waits too.
    other = build_runtime(runtime.settings)
    other.queue = Queue(connect(redis_settings(runtime.settings)))
    try:
        async with app_client(other) as c:
            slowed = await _sign_in(c, "alice")
            assert slowed.status_code == 429
            assert 1 <= int(slowed.headers["retry-after"]) <= throttle.WINDOW_SECONDS
            assert "Too many wrong passwords" in slowed.text
    finally:
        await other.close()
    async with runtime.sessions() as s:
        failures = await s.execute(select(AuditEntry).where(col(AuditEntry.action) == "console.sign_in_failed"))
        rows = list(failures.scalars())
    assert len(rows) == throttle.MAX_FAILURES and all(r.target == "operator:alice" for r in rows)
    keys = [k.decode() for k in await runtime.queue.redis.keys(throttle.PREFIX + "*")]  # type: ignore[union-attr]
    assert keys and not any("alice" in k or "127.0.0.1" in k for k in keys)  # digests, never the name or address


async def test_five_wrong_passwords_from_one_address_slow_every_name_down(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    await _operator(runtime, "alice")
    for n in range(throttle.MAX_FAILURES):
        assert (await _sign_in(client, f"nobody{n}", "wrong password!")).status_code == 401
    assert (await _sign_in(client, "alice")).status_code == 429


async def test_changes_need_the_csrf_token_and_an_administrator(runtime: Runtime, client: httpx.AsyncClient) -> None:
    await _operator(runtime, "alice")
    await _operator(runtime, "victor", OperatorRole.viewer)
    await _sign_in(client, "alice")
    assert (await client.post("/console/pause", data={})).status_code == 403
    token = await _form_token(client, "/console")
    paused = await client.post("/console/pause", data={"csrf": token})
    assert paused.status_code == 303
    async with runtime.sessions() as s:
        audit: list[Any] = list(
            (await s.execute(select(AuditEntry).where(col(AuditEntry.action) == "pause"))).scalars()
        )
    assert [a.actor for a in audit] == ["alice"]
    assert "Processing is paused" in (await client.get("/console/events")).text  # the banner, on every page
    client.cookies.clear()
    await _sign_in(client, "victor")
    token = await _form_token(client, "/console")
    refused = await client.post("/console/resume", data={"csrf": token})
    assert refused.status_code == 403 and "viewer" in refused.text


async def test_an_events_page_never_shows_a_secret_its_payload_holds(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    from app.db.models import Event
    from tests.conftest import TEST_TOKENS

    await _operator(runtime, "alice")
    payload = {"contact": {"username": "jane", "password": "a-password-in-a-payload"},
               "note": f"sent with Bearer {TEST_TOKENS['api']}"}  # fmt: skip
    async with runtime.sessions() as s:
        event = Event(
            source="coursesales", kind="contact.upserted", dedupe_key="mask-1", body_hash="-", payload=payload
        )
        s.add(event)
        await s.commit()
    await _sign_in(client, "alice")
    page = (await client.get(f"/console/events/{event.id}")).text
    assert "jane" in page and "[redacted]" in page
    assert "a-password-in-a-payload" not in page and TEST_TOKENS["api"] not in page


async def test_without_redis_wrong_passwords_are_counted_in_the_process(runtime: Runtime, monkeypatch: Any) -> None:
    """Redis down: the counts fall back to this process's memory; the limit still holds (per process), and an
    expired window starts again."""
    from arq.connections import RedisSettings

    monkeypatch.setattr(throttle, "_local", {})
    real = runtime.queue
    runtime.queue = Queue(connect(RedisSettings(host="127.0.0.1", port=1)))  # nothing listens there
    try:
        for _ in range(throttle.MAX_FAILURES - 1):
            await throttle.failed(runtime, "alice", "192.0.2.1")
        assert await throttle.wait_seconds(runtime, "alice", "192.0.2.1") == 0  # four: may still try
        await throttle.failed(runtime, "alice", "192.0.2.1")
        waits = await throttle.wait_seconds(runtime, "alice", "192.0.2.1")
        assert 1 <= waits <= throttle.WINDOW_SECONDS + 1
        assert await throttle.wait_seconds(runtime, "alice", "198.51.100.9") > 0  # the name, from anywhere
        assert await throttle.wait_seconds(runtime, "bob", "192.0.2.1") > 0  # the address, for any name
        assert await throttle.wait_seconds(runtime, "bob", "198.51.100.9") == 0
        # The window over (moved to the past), the name may try again.
        monkeypatch.setattr(throttle, "_local", {k: (n, 0.0) for k, (n, _) in throttle._local.items()})
        assert await throttle.wait_seconds(runtime, "alice", "192.0.2.1") == 0
        assert all("alice" not in key and "192.0.2.1" not in key for key in throttle._local)  # digests only
    finally:
        await runtime.queue.close()
        runtime.queue = real
