"""Every row carries its tenant, and every query is scoped to one tenant here, in one place.

A model that mixes in ``TenantScoped`` has a ``tenant_id`` column. A session belongs to one tenant
(``session.info["tenant_id"]``, set by the session factory; a session without one is the tenant ``default``'s, id 0,
so a single-provider install reads and writes exactly as before). Two listeners on every ORM session:

- ``do_orm_execute`` adds ``tenant_id = <the session's>`` to every ORM select, update and delete of a scoped model,
  aliases and subqueries included (``with_loader_criteria``);
- ``before_flush`` stamps the session's tenant on every new scoped object.

Core statements on a ``Table`` (the inbox's multi-row insert, the upserts, the executemany batches) do not pass
through the ORM's criteria: they take ``tenant_of(session)`` explicitly. The hub's own reads across tenants opt out
with ``ALL_TENANTS`` (``statement.execution_options(**ALL_TENANTS)``), named so that a search finds every one.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any, TypeVar

from sqlalchemy import Integer, column, event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria
from sqlmodel import Field, SQLModel

from app.db.tenants import DEFAULT_TENANT_ID

TENANT_KEY = "tenant_id"
# The execution option of a statement that reads or changes every tenant's rows (the hub's, never a tenant's).
ALL_TENANTS: dict[str, Any] = {"all_tenants": True}


class TenantScoped(SQLModel):
    """The tenant a row belongs to: 0 is ``default`` (the file's configuration), registered tenants start at 1."""

    # None only until the flush stamps the session's tenant; no column default, so a Core insert that forgets it is
    # refused rather than quietly put in ``default``.
    tenant_id: int = Field(default=None, nullable=False)


def tenant_of(session: AsyncSession | Session) -> int:
    """The tenant a session works for."""
    return int(session.info.get(TENANT_KEY, DEFAULT_TENANT_ID))


Row = TypeVar("Row", bound=TenantScoped)


async def get_by_key(session: AsyncSession, model: type[Row], key: Any, **kw: Any) -> Row | None:
    """``session.get`` of a table whose natural key is (tenant_id, key): leases, upstream states, course dates..."""
    return await session.get(model, (tenant_of(session), key), **kw)


def session_info(tenant_id: int) -> dict[str, Any]:
    """The ``info`` a tenant's session factory gives each session."""
    return {TENANT_KEY: tenant_id}


@event.listens_for(Session, "do_orm_execute")
def _scope_statement(state: ORMExecuteState) -> None:
    if state.is_column_load or state.is_relationship_load:
        return  # a load of an object already read in this scope
    if not (state.is_select or state.is_update or state.is_delete):
        return
    if state.execution_options.get("all_tenants"):
        return
    if "tenant_id" not in TenantScoped.__dict__:
        # with_loader_criteria reads ``cls.tenant_id`` once on the mixin itself to analyse the criteria (each model
        # has its own column attribute, which shadows this), and pydantic keeps fields off the class: a stand-in,
        # set once every model is declared (set at import, the models' declaration warned of it).
        type.__setattr__(TenantScoped, "tenant_id", column("tenant_id", Integer))
    state.statement = _scoped(state.statement, tenant_of(state.session))


def _scoped(statement: Any, tenant_id: int) -> Any:
    """The statement with the tenant's criteria. A statement built once and run often (the claim's) is scoped once
    per tenant and kept: its cache key is then made once too, not on every run (that cost a quiet worker a third of
    its claim's time). A statement built per call costs the look-up."""
    key = (id(statement), tenant_id)
    kept = _SCOPED.get(key)
    if kept is not None and kept[0] is statement:
        _SCOPED.move_to_end(key)
        return kept[1]
    scoped = statement.options(_criteria(tenant_id))
    _SCOPED[key] = (statement, scoped)
    if len(_SCOPED) > _KEEP:
        _SCOPED.popitem(last=False)
    return scoped


_KEEP = 512
_SCOPED: OrderedDict[tuple[int, int], tuple[Any, Any]] = OrderedDict()


@functools.cache
def _criteria(tenant_id: int) -> Any:
    """The option of one tenant, made once (making it analyses its lambda)."""
    return with_loader_criteria(TenantScoped, lambda cls: cls.tenant_id == tenant_id, include_aliases=True)


@event.listens_for(Session, "before_flush")
def _stamp_new_rows(session: Session, _context: Any, _instances: Any) -> None:
    tenant_id = tenant_of(session)
    for obj in session.new:
        if isinstance(obj, TenantScoped):
            obj.tenant_id = tenant_id
