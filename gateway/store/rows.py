"""Rows read by Core statements, as objects of the mapped classes that the views read.

The objects are built from the row's columns, with no ORM session behind them: read their attributes
(or set them, to mirror an UPDATE the caller ran), never expect them to load or flush anything.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Connection, Select

from gateway.store.tables import Base

M = TypeVar("M", bound=Base)


def load_first(connection: Connection, cls: type[M], statement: Select[Any]) -> M | None:
    """The first row of `statement` (a `select(cls)`) as a `cls`, or None."""
    row = connection.execute(statement).first()
    return None if row is None else cls(**row._mapping)


def load_all(connection: Connection, cls: type[M], statement: Select[Any]) -> list[M]:
    """Every row of `statement` (a `select(cls)`) as a `cls`, in the statement's order."""
    return [cls(**row._mapping) for row in connection.execute(statement)]
