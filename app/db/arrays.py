"""PostgreSQL's statements over arrays: a round's batch of rows in one statement (SQLite takes the executemany).

As an executemany, PostgreSQL plans and runs every row on its own: a 30,200-event drain made 30,200 of each of the
claim's attempt inserts and the finishing updates, about 14 s of the database's 32 s (BENCHMARKS.md). Here each is
one statement a round, the batch passed as one array a column and read back row by row with ``unnest``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, any_, bindparam, cast, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.dialect import on_postgres
from app.db.upsert import insert_for

# What a caller adds to its INSERT (``on_conflict_do_update``, ``returning``...): given the dialect's INSERT, the
# statement to run.
Shape = Callable[[Any], Any]


def one_of(session: AsyncSession, column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """``column IN values`` for a round's list of keys: on PostgreSQL ``column = ANY(:array)``, one parameter of a
    fixed statement; elsewhere the IN list. An IN list's statement is rendered again for each length of the list,
    a parameter a value (8% of the drain's worker CPU, BENCHMARKS.md)."""
    listed = list(values)
    target: ColumnElement[Any] = column  # sqlmodel types a model's column as its Python value
    if on_postgres(session):
        return target == any_(bindparam(None, listed, type_=ARRAY(target.type)))
    return target.in_(listed)


async def insert_rows(
    session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]], *, shape: Shape | None = None
) -> Any:
    """Insert ``rows`` (each with the same columns, ``tenant_id`` among them) into ``table``: on PostgreSQL one
    ``INSERT ... SELECT ... FROM unnest(...)`` with an array a column, elsewhere an executemany. ``shape``: the
    upsert's clause or the RETURNING, applied to either INSERT; the statement's result is returned (None for no
    rows). On PostgreSQL a key twice in one ``ON CONFLICT DO UPDATE`` is refused by PostgreSQL itself: callers keep
    one row a key (``DO NOTHING`` takes the first, as the executemany does)."""
    if not rows:
        return None
    names = tuple(rows[0])
    if not on_postgres(session):
        stmt = insert_for(session, table)
        return await session.execute(shape(stmt) if shape else stmt, list(rows))
    stmt = _shaped(_unnest_insert(table, names), shape)
    return await session.execute(stmt, {f"a_{n}": [row[n] for row in rows] for n in names})


@functools.lru_cache(maxsize=256)
def _shaped(stmt: Any, shape: Shape | None) -> Any:
    """The shaped statement, made once for a (statement, shape): both are made once (a shape is a module-level
    function), so the cache key is made once too."""
    return shape(stmt) if shape else stmt


@functools.cache
def _unnest_insert(table: Table, names: tuple[str, ...]) -> PgInsert:
    """``INSERT INTO table (names) SELECT * FROM unnest(CAST(:a_name AS type[]), ...)``, made once a shape. Each
    array's items go through their column type's own bind processing (a naive time is refused, as in a row)."""
    arrays = [cast(bindparam(f"a_{n}", type_=ARRAY(table.c[n].type)), ARRAY(table.c[n].type)) for n in names]
    rows = func.unnest(*arrays).table_valued(*names).render_derived(name="b")
    return pg_insert(table).from_select(list(names), select(*(rows.c[n] for n in names)))


async def finish(session: AsyncSession, rows: Sequence[dict[str, Any]], now: datetime) -> None:
    """app.db.inbox.finish_all's update of the events."""
    columns = {key: [row[key] for row in rows] for key in _FINISHED}
    columns["b_result"] = [None if r is None else json.dumps(r) for r in columns["b_result"]]
    await session.execute(_FINISH_EVENTS, {**columns, "b_now": now})


_FINISHED = ("b_id", "b_status", "b_error", "b_next", "b_keep_result", "b_result", "b_drop_secret")
_FINISH_EVENTS = text(
    """
    UPDATE events SET
        status = b.status, last_error = b.error, next_attempt_at = b.next_at, lease_until = NULL, updated_at = :b_now,
        result = CASE WHEN b.keep_result THEN events.result ELSE CAST(b.result AS JSON) END,
        secret = CASE WHEN b.drop_secret THEN NULL ELSE events.secret END
    FROM unnest(
        CAST(:b_id AS INTEGER[]), CAST(:b_status AS VARCHAR[]), CAST(:b_error AS VARCHAR[]),
        CAST(:b_next AS TIMESTAMP WITH TIME ZONE[]), CAST(:b_keep_result AS BOOLEAN[]), CAST(:b_result AS TEXT[]),
        CAST(:b_drop_secret AS BOOLEAN[])
    ) AS b(id, status, error, next_at, keep_result, result, drop_secret)
    WHERE events.id = b.id
    """
)
