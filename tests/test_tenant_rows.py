"""Every row carries its tenant and every query is scoped to the session's (app.db.tenancy); the upgrade from a
single-tenant database keeps every row under `default`; the migrated schema is the models' own."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import column, delete, func, insert, select, text, update
from sqlalchemy import table as sql_table
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel, col

from app.cli import run_migrations
from app.db import claim, inbox, leases
from app.db.engine import SessionFactory, make_engine, make_session_factory
from app.db.models import CourseDateRow, Event, EventStatus, Lease, UpstreamState, UserLink
from app.db.tenancy import ALL_TENANTS, get_by_key, tenant_of
from app.runtime import Runtime
from app.sync.tables import table_of

A, B = 0, 7  # the tenant default, and a registered one


def _delivery(key: str, tenant: int, subject: str = "contact:1", **kw: Any) -> inbox.Delivery:
    return inbox.Delivery(
        source="coursesales",
        kind="contact.updated",
        dedupe_key=key,
        body_hash=kw.pop("body_hash", "h"),
        payload={"n": key},
        subject=subject,
        tenant_id=tenant,
        **kw,
    )


@pytest.fixture
async def two(runtime: Runtime) -> tuple[SessionFactory, SessionFactory]:
    return make_session_factory(runtime.engine, A), make_session_factory(runtime.engine, B)


async def _accept(sessions: SessionFactory, *deliveries: inbox.Delivery) -> list[Any]:
    async with sessions() as s:
        out = await inbox.accept_many(s, deliveries)
        await s.commit()
    return out


async def test_each_session_sees_and_changes_its_own_tenants_rows_only(two: tuple[SessionFactory, ...]) -> None:
    a, b = two
    (ea,) = await _accept(a, _delivery("d-1", A))
    (eb,) = await _accept(b, _delivery("d-1", B))  # the same delivery id in another tenant is another event
    assert ea.created and eb.created and ea.event_id != eb.event_id
    async with b() as s:
        assert tenant_of(s) == B
        assert [e.id for e in (await s.execute(select(Event))).scalars()] == [eb.event_id]
        assert await s.get(Event, ea.event_id) is None
        assert (await s.execute(select(func.count()).select_from(Event))).scalar_one() == 1
        # An ORM update or delete never reaches the other tenant's rows, whatever its where says.
        await s.execute(update(Event).values(last_error="b was here").execution_options(synchronize_session=False))
        await s.execute(delete(Event).where(col(Event.id) == ea.event_id))
        await s.commit()
    async with a() as s:
        mine = await s.get(Event, ea.event_id)
        assert mine is not None and mine.last_error is None and mine.tenant_id == A
        # The hub's reads across tenants say so.
        every = (await s.execute(select(Event).execution_options(**ALL_TENANTS))).scalars().all()
        assert {e.tenant_id for e in every} == {A, B}


async def test_a_statement_built_once_is_scoped_for_each_tenant_that_runs_it(two: tuple[SessionFactory, ...]) -> None:
    """The scoped form of a statement run often is kept (app.db.tenancy._scoped): kept per tenant, never shared."""
    a, b = two
    await _accept(a, _delivery("s-1", A))
    await _accept(b, _delivery("s-1", B))
    built_once = select(col(Event.tenant_id))
    for sessions, tenant in ((a, A), (b, B), (a, A), (b, B)):
        async with sessions() as s:
            assert (await s.execute(built_once)).scalars().all() == [tenant]


async def test_a_repeat_is_a_repeat_within_its_tenant_only(two: tuple[SessionFactory, ...]) -> None:
    a, _ = two
    first = await _accept(a, _delivery("d-2", A), _delivery("d-2", B))  # one group commit, two tenants
    assert [r.created for r in first] == [True, True]
    again = await _accept(a, _delivery("d-2", B), _delivery("d-2", A), _delivery("d-2", A, body_hash="other"))
    assert [r.event_id for r in again[:2]] == [first[1].event_id, first[0].event_id]
    assert not again[0].created and not again[1].created
    assert isinstance(again[2], inbox.BodyMismatch)


async def test_new_rows_are_stamped_and_natural_keys_are_per_tenant(two: tuple[SessionFactory, ...]) -> None:
    a, b = two
    for sessions, moodle_id in ((a, 11), (b, 11)):
        async with sessions() as s:
            s.add(UserLink(contact_id=5, username="ann", moodle_user_id=moodle_id))
            s.add(CourseDateRow(id=9000, category_id=1))
            s.add(UpstreamState(name="moodle", state="ok", since=datetime.now(UTC), checked_at=datetime.now(UTC)))
            assert await leases.acquire(s, "sweeper", "me", 60)
            await s.commit()
    async with b() as s:
        link = (await s.execute(select(UserLink))).scalar_one()
        assert link.tenant_id == B
        row = await get_by_key(s, CourseDateRow, 9000)
        assert row is not None and row.tenant_id == B
        assert (await get_by_key(s, Lease, "sweeper")) is not None
        # The key is unique within the tenant.
        s.add(UserLink(contact_id=6, username="ann", moodle_user_id=12))
        with pytest.raises(IntegrityError):
            await s.commit()


async def test_a_core_insert_without_its_tenant_is_refused(runtime: Runtime) -> None:
    """No column default: a statement that forgets the tenant fails, never lands quietly in `default`."""
    async with runtime.sessions() as s:
        with pytest.raises(IntegrityError):
            await s.execute(insert(table_of(UserLink)), [{"username": "bob", "moodle_user_id": 3, "adopted": False,
                                                          "suspended_by_sync": False,
                                                          "created_at": datetime.now(UTC),
                                                          "updated_at": datetime.now(UTC)}])  # fmt: skip


async def test_the_claim_takes_its_own_tenants_work_in_its_own_subject_order(two: tuple[SessionFactory, ...]) -> None:
    a, b = two
    (held,) = await _accept(a, _delivery("o-1", A, status=EventStatus.queued))  # open in A for contact:1
    (mine,) = await _accept(b, _delivery("o-2", B, status=EventStatus.queued))  # same subject in B: not held by A's
    async with b() as s:
        got = await claim.claim(s, kinds=["contact.updated"], limit=10, lease_seconds=60)
        await inbox.finish_all(s, [(e, inbox.Outcome(EventStatus.done)) for e in got])  # its attempt's row: B's
        await s.commit()
    assert [e.id for e in got] == [mine.event_id]
    async with a() as s:
        rows = (await s.execute(text("SELECT tenant_id, event_id FROM attempts"))).all()
        assert [tuple(r) for r in rows] == [(B, mine.event_id)]
        got = await claim.claim(s, kinds=["contact.updated"], limit=10, lease_seconds=60)
        assert [e.id for e in got] == [held.event_id]


# -- the schema ---------------------------------------------------------------------------------------------------


def _diff(url: str) -> list[Any]:
    async def run() -> list[Any]:
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda c: compare_metadata(
                        MigrationContext.configure(c, opts={"compare_type": True}), SQLModel.metadata
                    )
                )
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_the_migrated_schema_is_the_models_own(migrated: str) -> None:
    """Every table, column, key and index the models declare is what the migrations made (no drift either way)."""
    assert _diff(migrated) == []


BEFORE = "20261206_0016"  # the last single-tenant schema
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _fill_single_tenant(url: str) -> None:
    """Rows as today's code wrote them, one in every table that gains a tenant."""

    async def run() -> None:
        engine = make_engine(url)
        try:
            async with engine.begin() as conn:
                for statement, row in _ROWS:
                    await conn.execute(text(statement), {"now": NOW, **row})
        finally:
            await engine.dispose()

    asyncio.run(run())


_ROWS: list[tuple[str, dict[str, Any]]] = [
    (
        "INSERT INTO events (id, source, kind, dedupe_key, body_hash, subject, status, attempts, created_at, "
        "updated_at) VALUES (41, 'coursesales', 'contact.updated', 'd-41', 'h', 'contact:5', 'done', 1, :now, :now)",
        {},
    ),
    (
        "INSERT INTO attempts (event_id, number, started_at, outcome) VALUES (41, 1, :now, 'done')",
        {},
    ),
    (
        "INSERT INTO user_links (contact_id, username, moodle_user_id, suspended_by_sync, adopted, created_at, "
        "updated_at) VALUES (5, 'ann', 11, false, false, :now, :now)",
        {},
    ),
    ("INSERT INTO leases (name, owner, expires_at) VALUES ('sweeper', 'w1', :now)", {}),
    ("INSERT INTO course_dates (id, category_id, fetched_at) VALUES (9000, 500, :now)", {}),
    (
        "INSERT INTO course_links (course_date_id, moodle_course_id, created_by_sync, created_at, updated_at) "
        "VALUES (9000, 70, true, :now, :now)",
        {},
    ),
    (
        "INSERT INTO registrations (document_external_id, course_date_id, contact_key, status, created_at, "
        "updated_at) VALUES ('D-1', 9000, 'contact:5', 'registered', :now, :now)",
        {},
    ),
    (
        "INSERT INTO enrolment_links (moodle_user_id, moodle_course_id, course_date_id, document_external_id, status,"
        " role_id, timestart, timeend, created_at, updated_at) VALUES (11, 70, 9000, 'D-1', 'active', 5, 0, 0, :now,"
        " :now)",
        {},
    ),
    (
        "INSERT INTO runs (kind, trigger, dry_run, status, created_at) VALUES ('reconcile', 'api', false, 'done', :now)",
        {},
    ),
    ("INSERT INTO alerts (cause, message, created_at) VALUES ('event.failed', 'm', :now)", {}),
    (
        "INSERT INTO completions (contact_key, course_date_id, document_external_id, status, created_at, updated_at)"
        " VALUES ('contact:5', 9000, 'D-1', 'sent', :now, :now)",
        {},
    ),
    ("INSERT INTO user_intents (username, created_at) VALUES ('zed', :now)", {}),
    (
        "INSERT INTO upstream_states (name, state, since, checked_at, alerted_long) "
        "VALUES ('moodle', 'ok', :now, :now, false)",
        {},
    ),
    ("INSERT INTO do_not_sync (contact_key, actor, created_at) VALUES ('contact:9', 'api', :now)", {}),
    ("INSERT INTO audit (at, actor, action) VALUES (:now, 'api', 'replay')", {}),
    (
        "INSERT INTO operators (name, password_hash, role, session_version, created_at, updated_at) "
        "VALUES ('ops', 'x', 'admin', 1, :now, :now)",
        {},
    ),
]
TENANT_TABLES = sorted({statement.split()[2] for statement, _ in _ROWS})


def test_the_upgrade_keeps_every_row_under_default(migrated: str) -> None:
    """A database filled by the single-tenant schema: after the upgrade every row is the tenant default's, read by
    its sessions as before, and each natural key has room for the same value in another tenant."""
    run_migrations(migrated, "base", downgrade=True)
    run_migrations(migrated, BEFORE)
    try:
        _fill_single_tenant(migrated)
        run_migrations(migrated, "head")
        asyncio.run(_check_upgraded(migrated))
    finally:
        run_migrations(migrated, "base", downgrade=True)
        run_migrations(migrated, "head")


async def _check_upgraded(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            for table in TENANT_TABLES:
                rows = select(column("tenant_id")).select_from(sql_table(table)).distinct()
                tenants = (await conn.execute(rows)).scalars().all()
                assert tenants == [0], table
        default, other = make_session_factory(engine, A), make_session_factory(engine, B)
        async with default() as s:
            link = (await s.execute(select(UserLink))).scalar_one()
            assert (link.username, link.moodle_user_id, link.contact_id) == ("ann", 11, 5)
            assert (await s.get(Event, 41)) is not None
            assert (await get_by_key(s, CourseDateRow, 9000)) is not None
            # The same delivery id is still a repeat for default...
            (again,) = await inbox.accept_many(s, [_delivery("d-41", A, subject="contact:5")])
            assert not isinstance(again, inbox.BodyMismatch) and not again.created and again.event_id == 41
            await s.rollback()
        async with other() as s:
            assert (await s.execute(select(UserLink))).first() is None
            # ...and new for another tenant; the same username and lease name have room there too.
            (fresh,) = await inbox.accept_many(s, [_delivery("d-41", B, subject="contact:5")])
            assert not isinstance(fresh, inbox.BodyMismatch) and fresh.created
            s.add(UserLink(contact_id=5, username="ann", moodle_user_id=11))
            assert await leases.acquire(s, "sweeper", "w2", 60)
            await s.commit()
    finally:
        await engine.dispose()


def test_a_natural_key_is_read_with_its_tenant() -> None:
    """``session.get`` of a table keyed by (tenant_id, key) needs both: app.db.tenancy.get_by_key supplies the
    session's tenant. A bare ``get(Model, key)`` fails at run time, only on the path that reaches it."""
    import ast
    from pathlib import Path

    from sqlalchemy import inspect as sa_inspect

    from app.db.tenancy import TenantScoped

    keyed = {
        model.__name__
        for model in _subclasses(TenantScoped)
        if "tenant_id" in {c.name for c in sa_inspect(model).primary_key}
    }
    assert {"Lease", "UpstreamState", "DoNotSync", "CourseDateRow"} <= keyed
    bare = []
    for path in sorted(Path("app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
                first = node.args[0] if node.args else None
                name = first.attr if isinstance(first, ast.Attribute) else getattr(first, "id", None)
                if name in keyed:
                    bare.append(f"{path}:{node.lineno}")
    assert bare == []


def _subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _subclasses(sub)
    return out
