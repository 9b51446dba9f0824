"""A user deleted in Moodle (still answered by id, renamed: recording 150) is made again, relinked and re-enrolled;
a contact marked "do not sync" is left alone; a reconcile whose repairs fail says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from app.db.models import Alert, AuditEntry, Event
from app.runtime import Runtime
from tests.conftest import bearer
from tests.helpers import events, links, moodle_user, post_contact, process_all, register, settle
from tests.test_reconcile import RUNNING, reconcile, writes


async def audit_actions(rt: Runtime) -> list[tuple[str, str | None]]:
    async with rt.sessions() as s:
        rows = (await s.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars()
        return [(a.action, a.target) for a in rows]


async def enrolled_learners(client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any) -> Any:
    today = datetime.now(UTC).date()
    catalogue.add_course_date(RUNNING, today - timedelta(days=10), today + timedelta(days=30), 500)
    for n, name in enumerate(["ann", "bob"], start=1):
        await register(client, f"d-{n}", f"D-{n}", RUNNING, contact_id=n, username=name, email=f"{name}@example.com")
    await settle(runtime)
    return next(c for c in moodle_fake.courses.values() if str(c.get("idnumber")) == str(RUNNING))


async def test_the_reconcile_makes_a_deleted_user_again_then_writes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    course = await enrolled_learners(client, runtime, moodle_fake, catalogue)
    ann = moodle_user(moodle_fake, "ann")
    moodle_fake.delete_user(ann["id"])  # type: ignore[index]
    answered = moodle_fake.users[ann["id"]]  # type: ignore[index]
    assert answered["username"] != "ann", "the fake keeps the deleted user, renamed, as Moodle does (150)"
    run = await reconcile(runtime, dry_run=False)
    assert run.status == "done" and run.counts["users_recreated"] == 1 and "failed" not in run.counts
    new_ann = moodle_user(moodle_fake, "ann")
    assert new_ann is not None and new_ann["id"] != ann["id"]  # type: ignore[index]
    assert moodle_fake.enrolments[(new_ann["id"], course["id"])]["status"] == 0
    by_name = {link.username: link for link in await links(runtime)}
    assert by_name["ann"].moodle_user_id == new_ann["id"]
    assert ("user.recreated", f"moodle_user:{new_ann['id']}") in await audit_actions(runtime)
    before = len(writes(moodle_fake))
    again = await reconcile(runtime, dry_run=False)
    assert again.status == "done" and writes(moodle_fake)[before:] == [], "a second reconcile writes nothing"


async def test_a_contact_update_makes_a_deleted_user_again(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    await post_contact(client, "c-1")
    await process_all(runtime)
    old = moodle_user(moodle_fake, "jane.doe@example.com")
    moodle_fake.delete_user(old["id"])  # type: ignore[index]
    await post_contact(client, "c-2", firstname="Janet")
    await process_all(runtime)
    assert [e.status for e in await events(runtime)] == ["done", "done"]
    new = moodle_user(moodle_fake, "jane.doe@example.com")
    assert new is not None and new["id"] != old["id"] and new["firstname"] == "Janet"  # type: ignore[index]
    (link,) = await links(runtime)
    assert link.moodle_user_id == new["id"] and not link.adopted
    assert ("user.recreated", f"moodle_user:{new['id']}") in await audit_actions(runtime)


async def test_a_user_deleted_between_the_read_and_the_update_is_made_again(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recording 154: the update of a deleted user answers usernotupdateddeleted; the next attempt makes it again."""
    from app.sync import users

    await post_contact(client, "c-1")
    await process_all(runtime)
    old = moodle_user(moodle_fake, "jane.doe@example.com")
    moodle_fake.delete_user(old["id"])  # type: ignore[index]
    monkeypatch.setattr(users, "deleted_in_moodle", lambda account, link: account is None)  # read before it went
    await post_contact(client, "c-2", firstname="Janet")
    await process_all(runtime)
    second = (await events(runtime))[1]
    new = moodle_user(moodle_fake, "jane.doe@example.com")
    assert second.status == "done" and second.attempts == 2, "the refused update, then the re-creation"
    assert new is not None and new["id"] != old["id"] and new["firstname"] == "Janet"  # type: ignore[index]
    (link,) = await links(runtime)
    assert link.moodle_user_id == new["id"]  # type: ignore[index]


async def test_a_do_not_sync_contact_is_left_alone(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    await enrolled_learners(client, runtime, moodle_fake, catalogue)
    ann = moodle_user(moodle_fake, "ann")
    moodle_fake.delete_user(ann["id"])  # type: ignore[index]  # an erasure request, done in Moodle
    marked = await client.put("/api/contacts/1/do-not-sync", json={"note": "erasure request"}, headers=bearer("api"))
    assert marked.status_code == 200 and marked.json()["contact_key"] == "contact:1"
    listed = (await client.get("/api/contacts/do-not-sync", headers=bearer("api"))).json()
    assert [m["contact_key"] for m in listed] == ["contact:1"]
    before = len(writes(moodle_fake))
    run = await reconcile(runtime, dry_run=False)
    assert run.status == "done" and moodle_user(moodle_fake, "ann") is None
    assert ("skip", "ann") in [(p["action"], p.get("username")) for p in run.plan]
    await register(client, "d-9", "D-9", RUNNING, contact_id=1, username="ann", email="ann@example.com")
    await settle(runtime)
    people = [w for w in writes(moodle_fake)[before:] if w.startswith(("core_user_", "enrol_"))]
    assert moodle_user(moodle_fake, "ann") is None and people == [], "nothing made or enrolled for ann"
    assert (await events(runtime))[-1].result == {"skipped": "the contact is marked do not sync"}
    assert ("contact.do_not_sync", "contact:1") in await audit_actions(runtime)
    assert (await client.delete("/api/contacts/1/do-not-sync", headers=bearer("api"))).status_code == 204
    assert (await client.delete("/api/contacts/1/do-not-sync", headers=bearer("api"))).status_code == 404


async def test_failed_repairs_are_counted_logged_and_alerted(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    await enrolled_learners(client, runtime, moodle_fake, catalogue)
    ann = moodle_user(moodle_fake, "ann")
    moodle_fake.delete_user(ann["id"])  # type: ignore[index]
    async with runtime.sessions() as s:  # the retention purge took the contact data a re-creation needs
        await s.execute(update(Event).values(payload=None))
        await s.commit()
    run = await reconcile(runtime, dry_run=False)
    assert run.status == "done" and run.counts["failed"] == 1
    assert "reconcile.repair_failed" in capsys.readouterr().out
    async with runtime.sessions() as s:
        causes = [a.cause for a in (await s.execute(select(Alert))).scalars()]
    assert causes == ["reconcile.repairs_failed"]


async def test_a_contact_name_longer_than_any_username_is_refused_not_a_500(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    """Found by the API fuzzer: a 200-character name reached the audit trail's 128-character column."""
    from app.sync import operations

    name = "ṰO" * 60  # 120 characters
    r = await client.put(f"/api/contacts/{name}/do-not-sync", json={"note": "x"}, headers=bearer("api"))
    assert r.status_code == 422, r.text
    longest = "u" * 100  # Moodle's longest username fits, with its prefix
    assert (await client.put(f"/api/contacts/username:{longest}/do-not-sync", headers=bearer("api"))).status_code == 200
    async with runtime.sessions() as s:
        with pytest.raises(operations.OperationError) as refused:
            await operations.do_not_sync(s, "username:" + "u" * 101, actor="cli", note=None)
    assert refused.value.status == 422
