"""Rows read by Core statements, as the plain row objects of store/tables.py that the views read."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Connection, Select

R = TypeVar("R")


def load_first(connection: Connection, cls: type[R], statement: Select[Any]) -> R | None:
    """The first row of `statement` (a select of cls's table) as a `cls`, or None."""
    row = connection.execute(statement).first()
    return None if row is None else cls(**row._mapping)


def load_all(connection: Connection, cls: type[R], statement: Select[Any]) -> list[R]:
    """Every row of `statement` (a select of cls's table) as a `cls`, in the statement's order."""
    return [cls(**row._mapping) for row in connection.execute(statement)]
