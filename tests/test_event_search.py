"""Finding an event by what it is about: a contact, a username, a course date, a Document."""

from __future__ import annotations

import httpx

from app.db.models import Event, EventStatus, Registration
from app.runtime import Runtime
from tests.conftest import bearer


async def _seed(rt: Runtime) -> dict[str, int]:
    subjects = {
        "jane": "contact:1234",
        "jane_completion": "completion:contact:1234:26519",
        "john": "contact:99",
        "course": "course_date:26519",
        "by_name": "username:jane.doe",
    }
    async with rt.sessions() as s:
        rows = {
            name: Event(source="coursesales", kind="contact.upserted", dedupe_key=f"search-{name}", body_hash="-",
                        payload={}, subject=subject, status=EventStatus.done)
            for name, subject in subjects.items()
        }  # fmt: skip
        s.add_all(rows.values())
        s.add(Registration(document_external_id="D-1001", course_date_id=26519, contact_key="contact:1234"))
        await s.commit()
        return {name: e.id for name, e in rows.items()}


async def _ids(client: httpx.AsyncClient, **params: str) -> set[int]:
    r = await client.get("/api/events", params=params, headers=bearer("api"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == len(body["items"])
    return {e["id"] for e in body["items"]}


async def test_events_by_subject(runtime: Runtime, client: httpx.AsyncClient) -> None:
    ids = await _seed(runtime)
    assert await _ids(client, subject="contact:1234") == {ids["jane"]}
    assert await _ids(client, subject="course_date:26519") == {ids["course"]}
    assert await _ids(client, subject="username:jane.doe") == {ids["by_name"]}
    assert await _ids(client, subject="contact:5") == set()


async def test_events_of_a_document_are_its_contacts_and_its_completions(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    ids = await _seed(runtime)
    assert await _ids(client, document="D-1001") == {ids["jane"], ids["jane_completion"]}
    assert await _ids(client, document="D-1001", status="failed") == set()
    assert await _ids(client, document="D-0000") == set(), "an unknown Document has no events"
