"""Upstream objects created through the gateway (gateway-key mode): who created which id."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.store.tables import UpstreamObject

ID_LENGTH = 200
_CHUNK = 500  # ids per IN (...) query: well below every database's parameter limit


async def record_objects(
    session: AsyncSession, insert: object, owner: str, kind: str, ids: Iterable[str], now: float
) -> None:
    """Record `ids` as `owner`'s; an id already recorded keeps its first owner.

    `insert` is the dialect's INSERT constructor (`Database.insert`), for ON CONFLICT DO NOTHING.
    """
    rows = [
        {"object_id": object_id, "owner": owner, "kind": kind[:32], "created_at": now}
        for object_id in dict.fromkeys(ids)
        if 0 < len(object_id) <= ID_LENGTH
    ]
    if not rows:
        return
    statement = insert(UpstreamObject).on_conflict_do_nothing(index_elements=["object_id"])  # type: ignore[operator]
    await session.execute(statement, rows)


async def owned_ids(session: AsyncSession, owner: str, ids: Collection[str]) -> set[str]:
    """The subset of `ids` recorded as `owner`'s."""
    wanted = [i for i in dict.fromkeys(ids) if 0 < len(i) <= ID_LENGTH]
    found: set[str] = set()
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        query = select(UpstreamObject.object_id).where(
            UpstreamObject.owner == owner, UpstreamObject.object_id.in_(chunk)
        )
        found.update((await session.scalars(query)).all())
    return found
