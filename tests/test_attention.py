"""Needs attention by cause (issue 18): failed and needs_review events grouped by what caused them, each group with
its fix in plain words, and one replay for the whole group. The errors are the ones the real flows write, run
against the fakes; the API's auth and input checks."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import insert, select, text

from app.db.models import AuditEntry, Event
from app.db.types import utcnow
from app.moodle.errors import MoodlePasswordPolicy
from app.runtime import Runtime
from app.settings import Settings
from app.sync import attention
from app.sync.adoption import refusal_message
from app.sync.operations import OperationError
from app.sync.user_fields import explain
from tests.conftest import ON_POSTGRES, TEST_TOKENS, bearer, make_settings
from tests.helpers import events, post_contact, process_all, register, settle
from tests.test_completions import enrolled, local_webhooks_body, post_moodle  # noqa: F401  (a fixture)
from tests.test_users_sync import seed_user

OPS = bearer("api")
READ_TOKEN = "read-only-token-for-attention-tests"
READ = {"Authorization": f"Bearer {READ_TOKEN}"}
FORKLIFT = "category-unmapped:600"  # the catalogue's category 600, "Forklift", has no Moodle category


@pytest.fixture
def settings(migrated: str, var_dir: Path) -> Settings:
    """The suite's settings with a read-only token beside the full one."""
    return make_settings(
        migrated, var_dir, api={"token": SecretStr(TEST_TOKENS["api"]), "read_token": SecretStr(READ_TOKEN)}
    )


async def _many_failures(client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any) -> None:
    """Three causes, as the real flows record them: two registrations for a course date whose category has no Moodle
    category (and the course event they asked for), two contacts whose emails belong to accounts made by hand, one
    contact without a password."""
    for n in range(2):
        await register(client, f"r-{n}", f"D-{n}", 9100, contact_id=10 + n, username=f"learner{n}",
                       email=f"learner{n}@example.com")  # fmt: skip
    for n in range(2):
        seed_user(moodle_fake, f"staff{n}", f"taken{n}@example.com")
        await post_contact(client, f"c-{n}", contact_id=20 + n, username=f"taken{n}", email=f"taken{n}@example.com")
    await post_contact(client, "c-np", contact_id=30, username="nopass", email="nopass@example.com", password=None)
    await settle(runtime)


async def test_groups_by_cause_with_fixes(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    await _many_failures(client, runtime, moodle_fake)
    stored = await events(runtime)
    assert {e.status for e in stored} == {"failed"}, [(e.kind, e.status, e.last_error) for e in stored]
    r = await client.get("/api/attention", headers=OPS)
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == len(stored) == 6 and body["truncated"] is False
    by_key = {g["key"]: g for g in body["groups"]}
    assert list(by_key) == [FORKLIFT, "email-taken", "no-password"], "largest group first"
    forklift = by_key[FORKLIFT]
    assert forklift["count"] == 3 and forklift["statuses"] == {"failed": 3}
    assert forklift["kinds"] == {"registration.registered": 2, "course.sync": 1}
    assert "600" in forklift["title"] and "Forklift" in forklift["title"]
    assert "Moodle Category Id" in forklift["fix"] and "In CourseSales" in forklift["fix"]
    reg_ids = sorted(e.id for e in stored if e.kind in ("registration.registered", "course.sync"))
    assert sorted(forklift["event_ids"]) == reg_ids
    assert forklift["oldest_at"] <= forklift["newest_at"]
    taken = by_key["email-taken"]
    assert taken["count"] == 2 and taken["kinds"] == {"contact.upserted": 2}
    assert "another Moodle user" in taken["title"] and "taken0@" not in taken["title"], "one title for the group"
    assert "users.adopt_existing" in taken["fix"]
    assert "portal password" in by_key["no-password"]["title"]
    read = await client.get("/api/attention", headers=READ)
    assert read.status_code == 200 and read.json() == body, "the read-only token reads it"


async def test_replay_a_group_once_fixed(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, catalogue: Any
) -> None:
    await _many_failures(client, runtime, moodle_fake)
    group = next(g for g in (await client.get("/api/attention", headers=OPS)).json()["groups"] if g["key"] == FORKLIFT)
    catalogue.add_category(600, "Forklift", moodle_category_id="2")  # the CourseSales admin mapped it
    r = await client.post(f"/api/attention/{FORKLIFT}/replay", json={"note": "mapped Forklift"}, headers=OPS)
    assert r.status_code == 200
    assert r.json()["replayed"] == sorted(group["event_ids"]), "the whole group, oldest first"
    after = {e.id: e for e in await events(runtime)}
    assert {after[i].status for i in r.json()["replayed"]} == {"queued"}, "committed, then queued"
    assert {e.status for e in after.values() if e.id not in r.json()["replayed"]} == {"failed"}, "other causes wait"
    async with runtime.sessions() as s:
        trail = list((await s.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars())
    replays = [a for a in trail if a.action == "replay"]
    assert sorted(a.target for a in replays) == sorted(f"event:{i}" for i in r.json()["replayed"])
    assert {(a.actor, a.note) for a in replays} == {("api", f"attention group {FORKLIFT}: mapped Forklift")}
    await settle(runtime)
    done = {e.id: e.status for e in await events(runtime)}
    assert {done[i] for i in r.json()["replayed"]} == {"done"}
    keys = [g["key"] for g in (await client.get("/api/attention", headers=OPS)).json()["groups"]]
    assert keys == ["email-taken", "no-password"]
    again = await client.post(f"/api/attention/{FORKLIFT}/replay", headers=OPS)
    assert again.status_code == 404 and FORKLIFT in again.json()["detail"]


async def test_password_refused_by_moodle(client: httpx.AsyncClient, runtime: Runtime) -> None:
    for rule in ("length", "digits", "lower", "upper", "nonalphanum"):  # our own check lets it through to Moodle
        setattr(runtime.settings.users, f"password_min_{rule}", 0)
    await post_contact(client, "c-weak", password="weak")
    await process_all(runtime)
    (event,) = await events(runtime)
    assert event.status == "failed" and event.last_error.startswith("Moodle refused the password")
    (group,) = (await client.get("/api/attention", headers=OPS)).json()["groups"]
    assert group["key"] == "password-policy" and "password policy" in group["title"]
    assert "CourseSales portal" in group["fix"]


async def test_completion_outcome_unknown(
    client: httpx.AsyncClient,
    runtime: Runtime,
    moodle_fake: Any,
    coursesales_fake: Any,
    enrolled: dict[str, int],  # noqa: F811  (the fixture imported above)
) -> None:
    moodle_fake.mark_complete(enrolled["user"], enrolled["course"])
    coursesales_fake.fail_next(1, "timeout_after")
    body = local_webhooks_body(
        "local_webhooks_course_completed.json", enrolled["user"], enrolled["course"], TEST_TOKENS["moodle"]
    )
    await post_moodle(client, body)
    await settle(runtime)
    event = (await events(runtime))[-1]
    assert event.status == "needs_review"
    (group,) = (await client.get("/api/attention", headers=OPS)).json()["groups"]
    assert group["key"] == "needs-review:completion" and group["statuses"] == {"needs_review": 1}
    assert "outcome unknown" in group["title"] and "resolve" in group["title"]
    assert "Document" in group["fix"] and group["event_ids"] == [event.id]


async def test_auth_and_bad_keys(client: httpx.AsyncClient, runtime: Runtime) -> None:
    assert (await client.get("/api/attention")).status_code == 401
    assert (await client.post(f"/api/attention/{FORKLIFT}/replay")).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token-at-all-0123"}
    assert (await client.get("/api/attention", headers=wrong)).status_code == 401
    refused = await client.post(f"/api/attention/{FORKLIFT}/replay", headers=READ)
    assert refused.status_code == 403 and "SYNC_API__READ_TOKEN" in refused.json()["detail"]
    for bad in ("Category-Unmapped:600", "has%20space", "-leading", "a" * 129, "semi;colon", "%C3%A9t%C3%A9"):
        r = await client.post(f"/api/attention/{bad}/replay", headers=OPS)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "key"], bad
    assert (await client.post("/api/attention/category-unmapped:999/replay", headers=OPS)).status_code == 404
    assert (await client.get("/api/attention?limit=0", headers=OPS)).status_code == 422
    empty = (await client.get("/api/attention", headers=OPS)).json()
    assert empty == {"groups": [], "total": 0, "truncated": False}


async def _seed(
    runtime: Runtime, n: int, error: str, *, status: str = "failed", kind: str = "contact.upserted"
) -> None:
    now = utcnow()
    rows = [
        {"tenant_id": 0, "source": "coursesales", "kind": kind, "dedupe_key": f"{error[:20]}-{status}-{i}", "body_hash": "x",
         "status": status, "last_error": error, "created_at": now, "updated_at": now}
        for i in range(n)
    ]  # fmt: skip
    async with runtime.sessions() as s:
        await s.execute(insert(Event), rows)
        await s.commit()


async def test_groups_are_bounded_and_sampled(runtime: Runtime) -> None:
    await _seed(
        runtime, 25, "the contact has no password: a Moodle user is only made for a contact with a portal password"
    )
    await _seed(runtime, 2, "no handler for event kind 'x.y'", kind="x.y")
    await _seed(runtime, 3, "done long ago", status="done")
    async with runtime.sessions() as s:
        found = await attention.groups(s)
        assert found.total == 27 and found.truncated is False
        assert [(g.cause.key, g.count, len(g.event_ids)) for g in found] == [
            ("no-password", 25, attention.SAMPLES),
            ("unknown-kind:x.y", 2, 2),
        ]
        bounded = await attention.groups(s, limit_events=10)
        assert bounded.truncated is True and bounded.total == 27, "the total counts them all"
        assert sum(g.count for g in bounded) == 10
        with pytest.raises(OperationError) as refused:
            await attention.replay_group(s, "email-taken", actor="ops:alice", note=None)
        assert refused.value.status == 404
        replayed = await attention.replay_group(s, "unknown-kind:x.y", actor="ops:alice", note=None, limit=1)
        assert [e.status for e in replayed] == ["accepted"], "the caller commits and queues"
        await s.commit()
        actors = (await s.execute(select(AuditEntry.actor, AuditEntry.note))).all()
        assert [tuple(a) for a in actors] == [("ops:alice", "attention group unknown-kind:x.y")]
        assert (await attention.groups(s)).total == 26, "a second call finds the rest"


async def test_attention_reads_use_the_partial_index(runtime: Runtime) -> None:
    if not ON_POSTGRES:
        pytest.skip("the plan is PostgreSQL's")
    await _seed(runtime, 3, "x")
    async with runtime.sessions() as s:
        await s.execute(text("SET LOCAL enable_seqscan = off"))
        query = select(Event.id).where(attention._WAITING).compile(compile_kwargs={"literal_binds": True})
        plan = "\n".join(r[0] for r in (await s.execute(text(f"EXPLAIN {query}"))).all())
    assert "ix_events_attention" in plan, plan


# Messages as the app's own builders write them, for causes the flows above do not reach.
ODD = [
    (explain(MoodlePasswordPolicy("<div>The password must have at least 8 characters.</div>")), "failed",
     "contact.upserted", "password-policy"),
    ("password does not meet the site password policy (users.* settings)", "failed", "contact.upserted",
     "password-policy"),
    (refusal_message("Moodle account 'jane' (id 5, auth 'ldap') has auth 'ldap', not one of users.adopt_auths "
                     "(manual): left untouched"), "needs_review", "contact.upserted", "account-auth:ldap"),
    (refusal_message("Moodle account 'jane' (id 5, auth 'manual') exists and this service did not make it: it is "
                     "left untouched"), "needs_review", "contact.upserted", "account-exists"),
    ("course category 'Kids \"A\"' (40) has no Moodle category: field 12 is empty there", "failed", "course.sync",
     "category-unmapped:40"),
    ("Moodle refused the course: Short name is already used (short name 'First Aid 9' or idnumber '9')", "failed",
     "course.sync", "course-conflict:9"),
    ("completion of Moodle user 5 in course 7: Moodle course 7 is not linked to a course date", "failed",
     "moodle.course_completed", "course-unlinked:7"),
    ("an earlier attempt may have posted this registration: check CourseSales, then resolve", "needs_review",
     "moodle.user_enrolment_created", "needs-review:registration"),
    ("Moodle refused the change: core_user_update_users: bad [invalidparameter]", "failed", "contact.upserted",
     "error:contact.upserted:invalidparameter"),
    ("Moodle refused the enrolment: something new", "needs_review", "registration.registered",
     "needs-review:registration.registered"),
]  # fmt: skip


@pytest.mark.parametrize(("error", "status", "kind", "key"), ODD)
def test_cause_of(error: str, status: str, kind: str, key: str) -> None:
    cause = attention.cause_of(SimpleNamespace(kind=kind, status=status, last_error=error))
    assert cause.key == key and cause.title and cause.fix


@pytest.mark.parametrize("kind", ["contact.upserted", "Größe/ünknown kind", "x" * 300, ""])
@pytest.mark.parametrize("error", [None, "", "CourseSales refused: no (HTTP 400)", "weird 'ÄÖ' [code] " * 40])
def test_every_key_is_url_safe(kind: str, error: str | None) -> None:
    for status in ("failed", "needs_review"):
        cause = attention.cause_of(SimpleNamespace(kind=kind, status=status, last_error=error))
        assert re.fullmatch(attention.KEY_PATTERN, cause.key) and len(cause.key) <= attention.KEY_MAX, cause.key
        assert len(cause.title) <= attention.TITLE_MAX


def test_a_catch_all_keeps_one_refusal_of_many_records_together() -> None:
    def key(error: str) -> str:
        return attention.cause_of(SimpleNamespace(kind="course.sync", status="failed", last_error=error)).key

    assert key("Moodle refused to update course 12: nope") == key("Moodle refused to update course 99: nope")
    assert key("Moodle refused to update course 12: nope") != key("CourseSales said something else")
    assert key("CourseSales refused: x (HTTP 409)") == "error:course.sync:http-409"
