"""No account taken over: an existing Moodle account the sync did not make is adopted only when allowed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from app.db.models import AuditEntry, Event, UserIntent
from app.runtime import Runtime
from app.sync.users import UserSync
from tests.conftest import bearer
from tests.helpers import events, links, moodle_user, post_contact, process_all
from tests.test_users_sync import seed_user

TEACHER = "teacher@example.com"


async def audit_entries(rt: Runtime) -> list[AuditEntry]:
    async with rt.sessions() as s:
        return list((await s.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars())


def teacher(fake: Any, **extra: Any) -> dict[str, Any]:
    """A teacher's account made by hand in Moodle, with a common username a student's contact id can also be."""
    account = seed_user(fake, TEACHER, TEACHER, firstname="Tess", lastname="Teacher", password="Teach3r!Own", **extra)
    return dict(account)


async def test_an_existing_account_is_left_untouched_with_adoption_off(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    before = teacher(moodle_fake)
    accounts = set(moodle_fake.users)
    await post_contact(client, "d-1", username=TEACHER, email="student@example.com", firstname="Stu")
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "needs_review"
    for named in (f"id {before['id']}", repr(TEACHER), "'manual'", "POST /api/links/users", "users.adopt_existing"):
        assert named in event.last_error, named
    assert moodle_fake.users[before["id"]] == before, "not one field of the teacher's account was written"
    assert not [c for c in moodle_fake.calls if c[0] == "core_user_update_users"]
    # A new contact's user is created first (issue 22): Moodle refused it (the username is taken) and made nothing.
    assert set(moodle_fake.users) == accounts
    assert await links(runtime) == []
    (entry,) = await audit_entries(runtime)
    assert (entry.actor, entry.action, entry.target) == ("sync", "user.adoption_refused", f"moodle_user:{before['id']}")
    # The first way out: link it by hand, then replay; the contact's data then applies.
    linked = await client.post(
        "/api/links/users", json={"username": TEACHER, "moodle_user_id": before["id"], "contact_id": 1234},
        headers=bearer("api"),
    )  # fmt: skip
    assert linked.status_code == 201, linked.text
    assert (await client.post(f"/api/events/{event.id}/replay", headers=bearer("api"))).status_code == 200
    await process_all(runtime)
    assert (await events(runtime))[0].status == "done"
    assert moodle_fake.users[before["id"]]["firstname"] == "Stu"


async def test_an_auth_outside_adopt_auths_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    runtime.settings.users.adopt_existing = True
    before = teacher(moodle_fake, auth="ldap")
    await post_contact(client, "d-1", username=TEACHER, email="student@example.com")
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "needs_review" and "'ldap'" in event.last_error and "adopt_auths" in event.last_error
    assert moodle_fake.users[before["id"]] == before
    runtime.settings.users.adopt_auths = ["manual", "ldap"]
    assert (await client.post(f"/api/events/{event.id}/replay", headers=bearer("api"))).status_code == 200
    await process_all(runtime)
    assert (await events(runtime))[0].status == "done"
    assert [e.action for e in await audit_entries(runtime)] == ["user.adoption_refused", "replay", "user.adopted"]


@pytest.mark.parametrize("overwrite", [False, True])
async def test_an_adopted_account_keeps_its_password_unless_told(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, overwrite: bool
) -> None:
    runtime.settings.users.adopt_existing = True
    runtime.settings.users.adopt_overwrites_password = overwrite
    account = teacher(moodle_fake)
    await post_contact(client, "d-1", username=TEACHER, email=TEACHER, password="Portal!Pass1")
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "done", event.last_error
    user = moodle_fake.users[account["id"]]
    assert user["password"] == ("Portal!Pass1" if overwrite else "Teach3r!Own")
    assert user["firstname"] == "Jane", "the locked fields are the contact's once adopted"
    # A later portal password change: an adopted account's password stays its own as well.
    await post_contact(client, "d-2", username=TEACHER, email=TEACHER, password="Portal!Pass2")
    await process_all(runtime)
    assert user["password"] == ("Portal!Pass2" if overwrite else "Teach3r!Own")
    (link,) = await links(runtime)
    assert link.adopted and link.moodle_user_id == account["id"]
    (entry,) = await audit_entries(runtime)
    assert entry.action == "user.adopted" and ("overwritten" if overwrite else "kept") in entry.note


async def test_the_tokens_own_user_is_never_adopted(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    runtime.settings.users.adopt_existing = True
    bot = dict(moodle_fake.users[moodle_fake.token_userid])
    await post_contact(client, "d-1", username=bot["username"], email="student@example.com")
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "needs_review" and "token's own user" in event.last_error
    assert moodle_fake.users[bot["id"]] == bot


async def test_a_site_administrator_refused_by_moodle_goes_to_review(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    """Moodle alone knows who is an administrator: its refusal to update one is a refusal, not a failure."""
    runtime.settings.users.adopt_existing = True
    admin = dict(moodle_fake.users[2])
    await post_contact(client, "d-1", username=admin["username"], email="student@example.com")
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "needs_review" and "site administrator" in event.last_error, event.last_error
    assert moodle_fake.users[2] == admin
    assert await links(runtime) == []
    assert [e.action for e in await audit_entries(runtime)] == ["user.adopted", "user.adoption_refused"]


async def test_match_by_email_only_matters_while_adoption_is_on(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    runtime.settings.users.match_by_email = True
    account = teacher(moodle_fake)
    await post_contact(client, "d-1", username="student1", email=TEACHER)
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "failed" and "users.adopt_existing" in event.last_error
    assert moodle_fake.users[account["id"]]["username"] == TEACHER
    runtime.settings.users.adopt_existing = True
    assert (await client.post(f"/api/events/{event.id}/replay", headers=bearer("api"))).status_code == 200
    await process_all(runtime)
    assert (await events(runtime))[0].status == "done"
    assert moodle_fake.users[account["id"]]["username"] == "student1", "adopted by email, renamed to the contact's"


async def test_a_crash_between_create_and_link_still_ends_in_one_linked_user(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adoption off: the account Moodle made before the worker died is recognised as the sync's own by its intent."""
    real = UserSync._insert_links
    crashed = []

    async def crash_once(self: UserSync) -> None:
        if not crashed:
            crashed.append(True)
            raise RuntimeError("worker killed between the create and the commit of its link")
        await real(self)

    monkeypatch.setattr(UserSync, "_insert_links", crash_once)
    await post_contact(client, "d-1")
    with pytest.raises(RuntimeError):
        await process_all(runtime)
    assert moodle_user(moodle_fake, "jane.doe@example.com") is not None and await links(runtime) == []
    async with runtime.sessions() as s:
        assert [i.username for i in (await s.execute(select(UserIntent))).scalars()] == ["jane.doe@example.com"]
        # The lease of the dead worker runs out: the sweeper would queue the event again.
        await s.execute(update(Event).values(status="accepted", lease_until=None))
        await s.commit()
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "done", event.last_error
    assert len([u for u in moodle_fake.users.values() if u["username"] == "jane.doe@example.com"]) == 1
    (link,) = await links(runtime)
    assert link.moodle_user_id == moodle_user(moodle_fake, "jane.doe@example.com")["id"] and not link.adopted  # type: ignore[index]
    async with runtime.sessions() as s:
        assert list((await s.execute(select(UserIntent))).scalars()) == [], "the intent ends with its link"
    assert await audit_entries(runtime) == []


@pytest.mark.usefixtures("catalogue")
async def test_the_migration_dry_run_lists_adopt_and_refuse_per_account(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    """Moving off the CourseSales plugins: deliveries wait (paused), a dry run says what each contact would find."""
    from tests.test_reconcile import reconcile

    assert (await client.post("/api/pause", json={"note": "migration"}, headers=bearer("api"))).status_code == 200
    plugin = seed_user(moodle_fake, "old.student@example.com", "old.student@example.com", auth="coursesales")
    manual = seed_user(moodle_fake, "manual.student@example.com", "manual.student@example.com")
    made = seed_user(moodle_fake, "half.made@example.com", "half.made@example.com")
    async with runtime.sessions() as s:
        s.add(UserIntent(username="half.made@example.com", contact_id=4))
        await s.commit()
    for n, name in enumerate(["old.student", "manual.student", "brand.new", "half.made"], start=1):
        await post_contact(client, f"m-{n}", contact_id=n, username=f"{name}@example.com", email=f"{name}@example.com")
    await post_contact(client, "m-5", contact_id=1, username="old.student@example.com", email="old.student@example.com")

    def accounts(run: Any) -> dict[str, tuple[str, Any]]:
        return {
            p["username"]: (p["action"], p.get("moodle_user_id")) for p in run.plan if p["action"].startswith("user.")
        }

    off = await reconcile(runtime, dry_run=True)
    assert accounts(off) == {
        "old.student@example.com": ("user.refuse", plugin["id"]),
        "manual.student@example.com": ("user.refuse", manual["id"]),
        "brand.new@example.com": ("user.create", None),
        "half.made@example.com": ("user.link", made["id"]),
    }
    runtime.settings.users.adopt_existing = True
    runtime.settings.users.adopt_auths = ["manual", "coursesales"]
    on = await reconcile(runtime, dry_run=True)
    assert accounts(on)["old.student@example.com"] == ("user.adopt", plugin["id"])
    assert accounts(on)["manual.student@example.com"] == ("user.adopt", manual["id"])
    refused = next(p for p in off.plan if p.get("username") == "old.student@example.com")
    assert refused["auth"] == "coursesales" and "left untouched" in refused["reason"]
    assert not [c for c in moodle_fake.calls if c[0] in ("core_user_create_users", "core_user_update_users")]
    assert {e.status for e in await events(runtime)} == {"queued"}, "a dry run changes nothing"
