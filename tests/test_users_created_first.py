"""New contacts' users are created first and looked up only when Moodle refuses their batch (issue 22): into an
empty Moodle a batch costs one call, not three; an account that exists already is found and treated exactly as when
it was looked up first; users.allow_same_email (Moodle's allowaccountssameemail) keeps the look-ups first."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from app.db.models import UserIntent
from app.runtime import Runtime
from tests.helpers import events, links, post_contact, process_all
from tests.test_users_sync import seed_user


def functions(fake: Any) -> list[str]:
    return [name for name, _ in fake.calls]


async def _post_three(client: httpx.AsyncClient, **second: Any) -> None:
    for n in range(3):
        extra = second if n == 1 else {}
        fields = {"username": f"learner{n}@example.com", "email": f"learner{n}@example.com"} | extra
        await post_contact(client, f"d-{n}", contact_id=100 + n, **fields)


async def test_a_batch_of_new_contacts_is_one_create_call(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    await _post_three(client)
    await process_all(runtime)
    assert [e.status for e in await events(runtime)] == ["done"] * 3
    assert functions(moodle_fake) == ["core_user_create_users"]  # no look-up by username or email before it
    assert len(await links(runtime)) == 3
    async with runtime.sessions() as s:
        assert (await s.execute(select(UserIntent))).all() == []  # the intents ended with their links


async def test_a_refused_batch_is_looked_up_and_the_rest_created(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    """One of three usernames is a teacher's account: Moodle refuses the whole batch, so the three are looked up;
    the teacher's account is someone else's (adoption off) and left alone, the two others are made."""
    teacher = dict(seed_user(moodle_fake, "learner1@example.com", "teacher@example.com"))
    await _post_three(client)
    await process_all(runtime)
    statuses = [e.status for e in await events(runtime)]
    assert statuses == ["done", "needs_review", "done"], [e.last_error for e in await events(runtime)]
    assert moodle_fake.users[teacher["id"]] == teacher
    made = [u["username"] for u in moodle_fake.users.values() if u["username"].startswith("learner")]
    assert sorted(made) == ["learner0@example.com", "learner1@example.com", "learner2@example.com"]  # 1: teacher's
    assert functions(moodle_fake)[:2] == ["core_user_create_users", "core_user_get_users_by_field"]
    async with runtime.sessions() as s:
        # The intent recorded for the refused create was withdrawn: the teacher's account is not the sync's own.
        assert (await s.execute(select(UserIntent))).all() == []


async def test_an_email_another_account_has_fails_as_before(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    other = seed_user(moodle_fake, "someone.else", "learner1@example.com")
    await _post_three(client)
    await process_all(runtime)
    found = await events(runtime)
    assert [e.status for e in found] == ["done", "failed", "done"]
    assert f"already belongs to Moodle user 'someone.else' (id {other['id']})" in (found[1].last_error or "")


async def test_allow_same_email_looks_users_up_before_the_create(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    """Where Moodle makes accounts whose email another has, it would not refuse a duplicate: the sync reads first."""
    runtime.settings.users.allow_same_email = True
    await _post_three(client)
    await process_all(runtime)
    assert [e.status for e in await events(runtime)] == ["done"] * 3
    assert functions(moodle_fake) == [
        "core_user_get_users_by_field",  # by username
        "core_user_get_users_by_field",  # by email
        "core_user_create_users",
    ]


async def test_a_contact_without_a_password_is_looked_up_not_presumed_new(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    """Only a contact that would be made is presumed new: one without a password finds its existing account."""
    runtime.settings.users.adopt_existing = True
    existing = seed_user(moodle_fake, "learner1@example.com", "learner1@example.com")
    await _post_three(client, password=None)
    await process_all(runtime)
    assert [(e.status, (e.result or {}).get("action")) for e in await events(runtime)] == [
        ("done", "created"),
        ("done", "updated"),
        ("done", "created"),
    ]
    assert {link.moodle_user_id for link in await links(runtime)} >= {existing["id"]}


async def test_a_batch_refused_for_one_bad_item_makes_the_others_and_fails_that_one(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    """Refused for a reason the look-up does not find (a password Moodle's policy refuses where these settings,
    looser than the site's, let it through), the batch is looked up, then made in halves that isolate the bad item:
    it fails with Moodle's reason, the others are made, no intent is left."""
    runtime.settings.users.password_min_length = 6
    await _post_three(client, password="Sh0rt!")
    await process_all(runtime)
    found = await events(runtime)
    assert [e.status for e in found] == ["done", "failed", "done"], [e.last_error for e in found]
    assert "password" in (found[1].last_error or "").lower()
    assert sorted(u["username"] for u in moodle_fake.users.values() if u["username"].startswith("learner")) == [
        "learner0@example.com",
        "learner2@example.com",
    ]
    async with runtime.sessions() as s:
        assert (await s.execute(select(UserIntent))).all() == []
