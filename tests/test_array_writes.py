"""A round's new rows (user links, registrations, enrolment links) as one statement each on PostgreSQL.

As an executemany, PostgreSQL planned and ran every row on its own: 50,000 statements of a 30,200-event drain
(BENCHMARKS.md). SQLite keeps the executemany; both must leave the same rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.exc import StatementError

from app.db.arrays import insert_rows
from app.db.models import EnrolmentLink, Event, Registration, UserLink
from app.db.tenancy import tenant_of
from app.db.types import utcnow
from app.runtime import Runtime
from app.sync.registrations import _newer_status
from app.sync.tables import table_of
from tests.conftest import ON_POSTGRES
from tests.helpers import events, register, settle

CD = 9001


def _registration(tenant: int, document: str, status: str, at: datetime) -> dict[str, Any]:
    return {
        "tenant_id": tenant,
        "document_external_id": document,
        "course_date_id": CD,
        "contact_key": f"contact:{document}",
        "status": status,
        "created_at": at,
        "updated_at": at,
    }


async def test_an_upsert_of_rows_keeps_one_row_a_key_and_takes_the_newer_status(runtime: Runtime) -> None:
    table = table_of(Registration)
    async with runtime.sessions() as s:
        tenant, now = tenant_of(s), utcnow()
        rows = [_registration(tenant, f"D-{i}", "registered", now) for i in range(3)]
        await insert_rows(s, table, rows, shape=_newer_status)
        await s.commit()
        again = [_registration(tenant, "D-1", "cancelled", now), _registration(tenant, "D-9", "registered", now)]
        await insert_rows(s, table, again, shape=_newer_status)
        await s.commit()
        kept = (await s.execute(select(Registration).order_by(Registration.document_external_id))).scalars().all()
    assert [(r.document_external_id, r.status) for r in kept] == [
        ("D-0", "registered"),
        ("D-1", "cancelled"),
        ("D-2", "registered"),
        ("D-9", "registered"),
    ]
    assert all(r.created_at == now and r.tenant_id == tenant for r in kept)


async def test_a_naive_time_in_the_rows_is_refused_and_nothing_is_written(runtime: Runtime) -> None:
    """Each array item goes through its column type's bind processing, as a row of an executemany does."""
    async with runtime.sessions() as s:
        tenant = tenant_of(s)
        rows = [
            _registration(tenant, "D-1", "registered", utcnow()),
            _registration(tenant, "D-2", "registered", utcnow()),
        ]
        rows[1]["updated_at"] = datetime(2026, 1, 1)  # the mistake under test
        with pytest.raises(StatementError, match="naive datetime"):
            await insert_rows(s, table_of(Registration), rows)
        await s.rollback()
        assert (await s.execute(select(sa.func.count()).select_from(Registration))).scalar_one() == 0


async def test_no_rows_make_no_statement(runtime: Runtime) -> None:
    seen: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(statement)

    sa.event.listen(runtime.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with runtime.sessions() as s:
            await insert_rows(s, table_of(UserLink), [])
    finally:
        sa.event.remove(runtime.engine.sync_engine, "before_cursor_execute", record)
    assert [x for x in seen if not x.startswith(("BEGIN", "ROLLBACK", "SELECT"))] == []


async def test_a_round_of_registrations_writes_each_table_in_one_statement(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any, coursesales_fake: Any
) -> None:
    """Five learners registered for one course date: their links, registrations and enrolment links land, each
    table in one INSERT on PostgreSQL (an executemany on SQLite)."""
    coursesales_fake.add_category(500, "First Aid", moodle_category_id="2")
    coursesales_fake.add_course_date(CD, "2026-12-01", "2026-12-03", 500)
    await register(client, "d-first", "D-0", CD, contact_id=700, username="l0@example.com", email="l0@x.org")
    await settle(runtime)  # the course is made, the first learner enrolled
    for i in range(1, 6):
        await register(client, f"d-{i}", f"D-{i}", CD, contact_id=700 + i, username=f"l{i}@example.com",
                       email=f"l{i}@x.org")  # fmt: skip
    inserts: list[tuple[str, bool]] = []
    keyed_reads: list[str] = []  # the round's reads by a list of keys

    def record(conn: object, cursor: object, statement: str, parameters: object, context: object, many: bool) -> None:
        if statement.startswith("INSERT INTO"):
            inserts.append((statement.split()[2], many))
        if statement.startswith(("SELECT user_links.", "SELECT do_not_sync.", "SELECT enrolment_links.")):
            keyed_reads.append(" ".join(statement.split()))

    sa.event.listen(runtime.engine.sync_engine, "before_cursor_execute", record)
    try:
        await settle(runtime)
    finally:
        sa.event.remove(runtime.engine.sync_engine, "before_cursor_execute", record)
    assert all(e.status == "done" for e in await events(runtime)), [
        (e.kind, e.last_error) for e in await events(runtime)
    ]
    async with runtime.sessions() as s:
        users = (await s.execute(select(UserLink.username).order_by(UserLink.username))).scalars().all()
        documents = (await s.execute(select(EnrolmentLink.document_external_id))).scalars().all()
        registered = (await s.execute(select(Registration.status))).scalars().all()
    assert users == [f"l{i}@example.com" for i in range(6)]
    assert sorted(documents) == [f"D-{i}" for i in range(6)] and registered == ["registered"] * 6
    written = [table for table, _ in inserts if table in ("user_links", "registrations", "enrolment_links")]
    assert sorted(written) == ["enrolment_links", "registrations", "user_links"], inserts
    assert all(many is not ON_POSTGRES for table, many in inserts if table in written), inserts
    # On PostgreSQL a list of keys is one array parameter (= ANY), not an IN list rendered again for each length.
    assert keyed_reads and all(
        ("= ANY (" in r) is ON_POSTGRES and (" IN (" in r) is not ON_POSTGRES for r in keyed_reads
    )


async def test_the_intakes_batch_is_one_insert_and_its_repeats_one_read(runtime: Runtime) -> None:
    """accept_many: the new deliveries in one INSERT (over arrays on PostgreSQL, not a VALUES list rendered for each
    batch's size), a delivery id twice in the batch and one stored before answered from one read."""
    from app.db import inbox
    from app.db.inbox import Delivery, Stored

    def delivery(key: str) -> Delivery:
        return Delivery(source="coursesales", kind="contact.upserted", dedupe_key=key, body_hash=f"h-{key}",
                        payload={"n": key, "nested": {"a": [1, 2]}}, subject=f"contact:{key}")  # fmt: skip

    async with runtime.sessions() as s:
        await inbox.accept_many(s, [delivery("old")])
        await s.commit()
    seen: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(" ".join(statement.split()))

    sa.event.listen(runtime.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with runtime.sessions() as s:
            answers = await inbox.accept_many(s, [delivery("a"), delivery("b"), delivery("a"), delivery("old")])
            await s.commit()
    finally:
        sa.event.remove(runtime.engine.sync_engine, "before_cursor_execute", record)
    assert [type(a) for a in answers] == [Stored] * 4
    stored = [a for a in answers if isinstance(a, Stored)]
    assert [a.created for a in stored] == [True, True, False, False]
    assert stored[0].event_id == stored[2].event_id != stored[1].event_id
    inserts = [x for x in seen if x.startswith("INSERT INTO events")]
    assert len(inserts) == 1 and ("unnest(" in inserts[0]) is ON_POSTGRES, inserts
    assert len([x for x in seen if x.startswith("SELECT events.")]) == 1, seen
    async with runtime.sessions() as s:
        payloads = (await s.execute(select(Event.payload))).scalars().all()
    assert sorted(p["n"] for p in payloads) == ["a", "b", "old"] and all(p["nested"] == {"a": [1, 2]} for p in payloads)
