"""What the console's browser tests do again and again: make operators with the CLI, sign in, seed and read the
service's database, deliver CourseSales events to the running service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.browser.conftest import Service, Visit
from tests.conftest import TEST_TOKENS

PASSWORD = "correct horse battery staple"


def add_operator(service: Service, name: str, *, viewer: bool = False, password: str = PASSWORD) -> None:
    """`moodle-sync operators add NAME` with the password on standard input, as an administrator would."""
    done = service.cli("operators", "add", name, *(["--viewer"] if viewer else []), stdin=password + "\n")
    assert done.returncode == 0, done.stdout + done.stderr


async def sign_in(visit: Visit, name: str, password: str = PASSWORD) -> None:
    await visit.goto("/console/sign-in")
    await visit.page.fill("#name", name)
    await visit.page.fill("#password", password)
    await visit.page.click("button[type=submit]")
    await visit.page.wait_for_url("**/console")


async def sql(service: Service, statement: str, **params: Any) -> list[Any]:
    """One statement on the service's database; the rows it returns (if any)."""
    engine = create_async_engine(service.env["SYNC_DATABASE_URL"])
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


async def deliver(service: Service, body: dict[str, Any]) -> None:
    """A CourseSales delivery to the running service, as its export would send it."""
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        answer = await client.post(
            "/webhooks/coursesales", json=body, headers={"Authorization": f"Bearer {TEST_TOKENS['coursesales']}"}
        )
        assert answer.status_code in (200, 202), answer.text


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float = 30.0, what: str = "") -> None:
    """Wait for the service to get there, with a deadline (the worker runs in the serve process)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.2)


async def event_status(service: Service, event_id: int) -> str:
    rows = await sql(service, "SELECT status FROM events WHERE id = :id", id=event_id)
    return str(rows[0][0])


async def clean(service: Service) -> None:
    """Every table emptied (children first), as the other tests' clean_db does, while the service runs."""
    from sqlmodel import SQLModel

    import app.db  # noqa: F401 (every table registered)

    for table in reversed(SQLModel.metadata.sorted_tables):
        await sql(service, f"DELETE FROM {table.name}")  # noqa: S608 (our own table names)


def assert_clean(visit: Visit) -> None:
    """Nothing asked of another host, no policy violation, no script error."""
    assert visit.foreign_requests() == []
    assert visit.csp_violations() == [], visit.console
    assert not [m for m in visit.console if m.startswith("pageerror")], visit.console
