"""The console's link-by-hand forms over HTTP: link a contact to a Moodle user and a course date to a Moodle course,
each under the operator's name in the audit trail; a refused form (a clash, a field that is not a number) says
why and writes nothing; unlink."""

from __future__ import annotations

from urllib.parse import unquote

import httpx
from sqlalchemy import select
from sqlmodel import col

from app.db.models import AuditEntry, CourseLink, UserLink
from app.runtime import Runtime
from tests.test_console import _form_token, _operator, _sign_in


async def _signed_in(runtime: Runtime, client: httpx.AsyncClient) -> str:
    await _operator(runtime, "alice")
    assert (await _sign_in(client, "alice")).status_code == 303
    return await _form_token(client, "/console/links")


def _said(r: httpx.Response) -> str:
    """The message the next page shows once (the flash cookie: "ok:..." or "error:...")."""
    return unquote(r.cookies.get("csms_flash") or "").strip('"')


async def _rows(runtime: Runtime, model: type) -> list:
    async with runtime.sessions() as s:
        return list((await s.execute(select(model))).scalars())


async def test_a_user_is_linked_and_unlinked_by_hand(runtime: Runtime, client: httpx.AsyncClient) -> None:
    csrf = await _signed_in(runtime, client)
    form = {"csrf": csrf, "username": " Jane.Doe@example.com ", "moodle_user_id": "42", "contact_id": "1234",
            "note": "matched by phone"}  # fmt: skip
    r = await client.post("/console/links/users", data=form)
    assert r.status_code == 303 and r.headers["location"] == "/console/links?tab=users"
    assert "jane.doe@example.com linked to Moodle user 42" in _said(r)
    (link,) = await _rows(runtime, UserLink)
    assert (link.contact_id, link.username, link.moodle_user_id) == (1234, "jane.doe@example.com", 42)
    page = await client.get("/console/links?tab=users")
    assert "jane.doe@example.com" in page.text
    # The same Moodle user again: refused, said why, nothing written.
    again = await client.post("/console/links/users", data=form | {"username": "other@example.com", "contact_id": ""})
    assert again.status_code == 303 and _said(again).startswith("error:Not linked")
    assert len(await _rows(runtime, UserLink)) == 1
    # A Moodle user id that is not a number: refused with the field named, nothing written.
    bad = await client.post("/console/links/users", data=form | {"moodle_user_id": "forty-two", "username": "x@y.z"})
    assert _said(bad).startswith("error:Not linked") and "moodle_user_id" in _said(bad)
    assert len(await _rows(runtime, UserLink)) == 1
    gone = await client.post("/console/links/users/42/unlink", data={"csrf": csrf})
    assert gone.status_code == 303 and "Moodle user 42 unlinked" in _said(gone)
    assert await _rows(runtime, UserLink) == []
    async with runtime.sessions() as s:
        trail = (
            await s.execute(select(AuditEntry).where(col(AuditEntry.action).in_(["link.user", "unlink.user"])))
        ).scalars()
        entries = [(a.action, a.actor, a.note) for a in trail]
    assert entries[0] == ("link.user", "alice", "matched by phone")
    assert [(action, actor) for action, actor, _ in entries] == [("link.user", "alice"), ("unlink.user", "alice")]


async def test_a_course_date_is_linked_and_unlinked_by_hand(runtime: Runtime, client: httpx.AsyncClient) -> None:
    csrf = await _signed_in(runtime, client)
    r = await client.post(
        "/console/links/courses", data={"csrf": csrf, "course_date_id": "9500", "moodle_course_id": "7"}
    )
    assert r.status_code == 303 and "Course date 9500 linked" in _said(r)
    (link,) = await _rows(runtime, CourseLink)
    assert (link.course_date_id, link.moodle_course_id, link.created_by_sync) == (9500, 7, False)
    clash = await client.post(
        "/console/links/courses", data={"csrf": csrf, "course_date_id": "9501", "moodle_course_id": "7"}
    )
    assert _said(clash).startswith("error:Not linked") and "9500" in _said(clash)
    assert len(await _rows(runtime, CourseLink)) == 1
    gone = await client.post("/console/links/courses/9500/unlink", data={"csrf": csrf})
    assert "Course date 9500 unlinked" in _said(gone)
    assert await _rows(runtime, CourseLink) == []


async def test_a_link_form_without_its_token_changes_nothing(runtime: Runtime, client: httpx.AsyncClient) -> None:
    await _signed_in(runtime, client)
    r = await client.post("/console/links/users", data={"username": "a@b.c", "moodle_user_id": "5"})
    assert r.status_code == 403
    assert await _rows(runtime, UserLink) == []
