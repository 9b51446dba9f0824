"""The Core table of a table model, for the batch statements that go past the ORM (one executemany, no objects)."""

from __future__ import annotations

from sqlalchemy import Table, inspect
from sqlmodel import SQLModel


def table_of(model: type[SQLModel]) -> Table:
    """``model.__table__``, typed: SQLModel declares no ``__table__``, its mapper holds the same Table."""
    table = inspect(model).local_table
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to one table")
    return table
