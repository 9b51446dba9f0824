"""Contacts -> Moodle users through the worker's code path, against the Moodle fake."""

from __future__ import annotations

from typing import Any

import httpx

from app.runtime import Runtime
from tests.fakes.moodle_state import new_user
from tests.helpers import events, links, moodle_user, post_contact, process_all


def seed_user(fake: Any, username: str, email: str, **extra: Any) -> dict[str, Any]:
    uid = fake.state.next_id("user")
    fake.users[uid] = new_user(
        uid, username, extra.pop("firstname", "Old"), extra.pop("lastname", "Name"), email, **extra
    )
    return fake.users[uid]


async def test_create_then_link_recorded(client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any) -> None:
    await post_contact(client, "d-1")
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "done", event.last_error
    assert event.secret is None, "the password must be dropped once applied"
    user = moodle_user(moodle_fake, "jane.doe@example.com")
    assert user is not None
    assert user["auth"] == "manual" and user["password"] == "S3cret!pass" and user["idnumber"] == "1234"
    (link,) = await links(runtime)
    assert (link.contact_id, link.username, link.moodle_user_id) == (1234, "jane.doe@example.com", user["id"])
    assert event.result == {"moodle_user_id": user["id"], "action": "created"}


async def test_batch_with_one_rejected_user(client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any) -> None:
    # The token cannot see emails (recording 043), so a taken email is only found by Moodle refusing the batch.
    moodle_fake.viewuseridentity = False
    seed_user(moodle_fake, "someoneelse", "taken@example.com")
    for n, email in enumerate(["a@example.com", "taken@example.com", "c@example.com"], start=1):
        await post_contact(client, f"d-{n}", contact_id=n, username=f"user{n}", email=email)
    await process_all(runtime)
    by_id = {e.dedupe_key: e for e in await events(runtime)}
    assert by_id["d-1"].status == "done" and by_id["d-3"].status == "done"
    assert by_id["d-2"].status == "failed"
    assert "invalid" in by_id["d-2"].last_error and "email" in by_id["d-2"].last_error
    assert moodle_user(moodle_fake, "user1") and moodle_user(moodle_fake, "user3")
    assert moodle_user(moodle_fake, "user2") is None
    batches = [len(p["users"]) for f, p in moodle_fake.calls if f == "core_user_create_users"]
    assert batches[0] == 3, "the three users go to Moodle in one array call first"


async def test_taken_email_names_the_moodle_user(client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any) -> None:
    other = seed_user(moodle_fake, "jdoe", "jane.doe@example.com")
    await post_contact(client, "d-1")
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "failed"
    assert "'jdoe'" in event.last_error and f"id {other['id']}" in event.last_error
    assert "match_by_email" in event.last_error
    assert await links(runtime) == []


async def test_match_by_email_links_existing_user(
    settings: Any, moodle_fake: Any, runtime: Runtime, client: httpx.AsyncClient
) -> None:
    runtime.settings.users.adopt_existing = True
    runtime.settings.users.match_by_email = True
    other = seed_user(moodle_fake, "jdoe", "jane.doe@example.com")
    await post_contact(client, "d-1")
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "done", event.last_error
    assert moodle_fake.users[other["id"]]["username"] == "jane.doe@example.com"
    assert (await links(runtime))[0].moodle_user_id == other["id"]


async def test_existing_username_is_adopted_not_duplicated(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    """With users.adopt_existing (off by default): adopted under the field policy, its password its own."""
    runtime.settings.users.adopt_existing = True
    existing = seed_user(moodle_fake, "jane.doe@example.com", "jane.doe@example.com", firstname="J", phone1="999")
    await post_contact(client, "d-1")
    await process_all(runtime)
    # Not duplicated: the create tried first (issue 22) was refused, the username being taken.
    assert [u["id"] for u in moodle_fake.users.values() if u["username"] == "jane.doe@example.com"] == [existing["id"]]
    user = moodle_fake.users[existing["id"]]
    assert user["firstname"] == "Jane", "firstname is locked: CourseSales wins"
    assert user["phone1"] == "999", "phone1 is unlocked: Moodle owns it after creation"
    assert user["password"] == existing["password"] != "S3cret!pass", "an adopted account keeps its password"
    (link,) = await links(runtime)
    assert link.adopted and link.moodle_user_id == existing["id"]


async def test_locked_and_unlocked_fields_on_update(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    await post_contact(client, "d-1")
    await process_all(runtime)
    user = moodle_user(moodle_fake, "jane.doe@example.com")
    assert user is not None and user["phone1"] == "0400000000"
    await post_contact(client, "d-2", firstname="Janet", phone="0411111111")
    await process_all(runtime)
    assert user["firstname"] == "Janet"
    assert user["phone1"] == "0400000000", "unlocked: not overwritten after creation"
    runtime.settings.users.fields["phone1"] = "locked"  # type: ignore[assignment]
    await post_contact(client, "d-3", firstname="Janet", phone="0422222222")
    await process_all(runtime)
    assert user["phone1"] == "0422222222"


async def test_unlocked_if_empty(client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any) -> None:
    """Kept while Moodle has a value; filled while it is empty (both halves of the rule)."""
    moodle_fake.viewfullnames = True  # names visible to the token (moodle/site:viewfullnames)
    runtime.settings.users.adopt_existing = True
    runtime.settings.users.fields["lastname"] = "unlocked_if_empty"  # type: ignore[assignment]
    runtime.settings.users.fields["firstname"] = "unlocked_if_empty"  # type: ignore[assignment]
    seed_user(moodle_fake, "jane.doe@example.com", "jane.doe@example.com", firstname="", lastname="Kept")
    await post_contact(client, "d-1")
    await process_all(runtime)
    user = moodle_user(moodle_fake, "jane.doe@example.com")
    assert user is not None
    assert user["lastname"] == "Kept", "a value already in Moodle is kept"
    assert user["firstname"] == "Jane", "an empty field is filled"


async def test_renamed_username_renames_the_same_user(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    await post_contact(client, "d-1")
    await process_all(runtime)
    uid = moodle_user(moodle_fake, "jane.doe@example.com")["id"]  # type: ignore[index]
    await post_contact(client, "d-2", username="J.Smith@example.com")
    await process_all(runtime)
    assert moodle_user(moodle_fake, "jane.doe@example.com") is None
    renamed = moodle_user(moodle_fake, "j.smith@example.com")
    assert renamed is not None and renamed["id"] == uid
    (link,) = await links(runtime)
    assert link.username == "j.smith@example.com" and link.moodle_user_id == uid


async def test_password_change_reaches_moodle_once(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    await post_contact(client, "d-1")
    await process_all(runtime)
    await post_contact(client, "d-2", password="N3w!Passw0rd")
    await process_all(runtime)
    user = moodle_user(moodle_fake, "jane.doe@example.com")
    assert user["password"] == "N3w!Passw0rd"  # type: ignore[index]
    await post_contact(client, "d-3", password="N3w!Passw0rd")
    await process_all(runtime)
    updates = [p for f, p in moodle_fake.calls if f == "core_user_update_users"]
    assert len(updates) == 1, "an unchanged contact makes no Moodle write"


async def test_inactive_contact_not_created_and_suspended(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    await post_contact(client, "d-0", contact_id=77, username="ghost", email="ghost@example.com", active=False)
    await process_all(runtime)
    assert moodle_user(moodle_fake, "ghost") is None
    await post_contact(client, "d-1")
    await process_all(runtime)
    await post_contact(client, "d-2", active=False)
    await process_all(runtime)
    user = moodle_user(moodle_fake, "jane.doe@example.com")
    assert user["suspended"] in (1, True)  # type: ignore[index]
    await post_contact(client, "d-3", active=True)
    await process_all(runtime)
    assert user["suspended"] in (0, False)  # type: ignore[index]


async def test_contact_without_password_not_created(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    await post_contact(client, "d-1", password=None)
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "failed" and "no password" in event.last_error


async def test_a_failed_call_retries_then_succeeds(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    """A fault of one call (an HTTP 500) is the event's: it retries with backoff. (A 503, Moodle's maintenance, is the
    upstream's: test_upstream_outages.)"""
    moodle_fake.fail_next(1, "500")
    await post_contact(client, "d-1")
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "retrying" and event.next_attempt_at is not None
    assert "HTTP 500" in event.last_error
    await process_all(runtime)  # not due yet: nothing happens
    assert (await events(runtime))[0].status == "retrying"
    from app.db.models import Event

    async with runtime.sessions() as s:
        row = await s.get(Event, event.id)
        row.next_attempt_at = row.created_at  # type: ignore[union-attr]
        await s.commit()
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "done" and event.attempts == 2
    assert moodle_user(moodle_fake, "jane.doe@example.com") is not None


async def test_a_503_holds_the_event_without_spending_an_attempt(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    from app.jobs.probe import probe_all

    moodle_fake.fail_next(1, "503")
    await post_contact(client, "d-1")
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "accepted" and event.attempts == 0 and "maintenance" in event.waiting_for
    assert (await probe_all(runtime, "test"))["moodle"] == {"state": "ok"}
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "done" and event.attempts == 1


async def test_wrong_moodle_token_holds_the_work_until_fixed(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    """A token problem is the upstream's, not the event's: the event waits, saying why; one alert names the fix; once
    fixed, a probe resumes it with no replay (issue 16 changed this from a failed event)."""
    from sqlalchemy import select

    from app.db.models import Alert
    from app.jobs.probe import probe_all

    moodle_fake.token = "another"
    await post_contact(client, "d-1")
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status in ("accepted", "queued") and event.attempts == 0
    assert "invalidtoken" in event.waiting_for and "SYNC_MOODLE__TOKEN" in event.waiting_for
    async with runtime.sessions() as s:
        (alert,) = (await s.execute(select(Alert))).scalars()
    assert alert.cause == "upstream.moodle" and "SYNC_MOODLE__TOKEN" in alert.fix
    moodle_fake.token = "test-token"
    report = await probe_all(runtime, "test", force=True)
    assert report["moodle"] == {"state": "ok"}
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "done" and event.waiting_for is None and event.attempts == 1


async def test_one_batch_adopts_without_a_password_and_creates_with_one(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    """New links of one batch are written together: an adopted user whose contact brings no password (no digest)
    and a created one (with its digest) land in the same statement, each with its own values."""
    runtime.settings.users.adopt_existing = True
    existing = seed_user(moodle_fake, "old.hand@example.com", "old.hand@example.com")
    await post_contact(client, "d-old", contact_id=51, username="old.hand@example.com", email="old.hand@example.com",
                       password=None)  # fmt: skip
    await post_contact(client, "d-new", contact_id=52, username="new.one@example.com", email="new.one@example.com")
    await process_all(runtime)
    assert [(e.status, (e.result or {}).get("action")) for e in await events(runtime)] == [
        ("done", "updated"),
        ("done", "created"),
    ]
    old, new = sorted(await links(runtime), key=lambda link: link.contact_id or 0)
    assert (old.moodle_user_id, old.password_digest, old.suspended_by_sync) == (existing["id"], None, False)
    assert new.moodle_user_id == moodle_user(moodle_fake, "new.one@example.com")["id"]  # type: ignore[index]
    assert new.password_digest is not None and new.data_digest is not None
    assert old.adopted and not new.adopted
