"""Upstream objects created through the gateway (gateway-key mode): who created which id."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from sqlalchemy import Connection, Insert, select
from sqlalchemy.dialects import sqlite

from gateway.store.tables import UPSTREAM_OBJECTS

ID_LENGTH = 200
_CHUNK = 500  # ids per IN (...) query: well below every database's parameter limit


def record_objects(connection: Connection, owner: str, kind: str, ids: Iterable[str], now: float) -> None:
    """Record `ids` as `owner`'s; an id already recorded keeps its first owner (ON CONFLICT DO NOTHING)."""
    rows = [
        {"object_id": object_id, "owner": owner, "kind": kind[:32], "created_at": now}
        for object_id in dict.fromkeys(ids)
        if 0 < len(object_id) <= ID_LENGTH
    ]
    if not rows:
        return
    statement: Insert = sqlite.insert(UPSTREAM_OBJECTS).on_conflict_do_nothing(index_elements=["object_id"])
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql  # loaded by the Postgres engine already: free here

        statement = postgresql.insert(UPSTREAM_OBJECTS).on_conflict_do_nothing(index_elements=["object_id"])
    connection.execute(statement, rows)


def owned_ids(connection: Connection, owner: str, ids: Collection[str]) -> set[str]:
    """The subset of `ids` recorded as `owner`'s."""
    wanted = [i for i in dict.fromkeys(ids) if 0 < len(i) <= ID_LENGTH]
    found: set[str] = set()
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        query = select(UPSTREAM_OBJECTS.c.object_id).where(
            UPSTREAM_OBJECTS.c.owner == owner, UPSTREAM_OBJECTS.c.object_id.in_(chunk)
        )
        found.update(connection.scalars(query).all())
    return found
