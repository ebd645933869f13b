"""Recorded spend (sums of attempts.cost_pusd), for key budgets and conversation cost caps."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import Connection, delete, func, insert, select, text

from gateway.store.tables import ATTEMPTS, BUDGET_RESERVATIONS


def caller_spent_pusd(connection: Connection, owner: str) -> int:
    """What one caller has spent, in picodollars (calls without a known price count 0)."""
    statement = select(func.coalesce(func.sum(ATTEMPTS.c.cost_pusd), 0)).where(ATTEMPTS.c.owner == owner)
    return int(connection.execute(statement).scalar_one() or 0)


def conversation_spent_pusd(connection: Connection, owner: str, conversation_id: str) -> int:
    """What the caller's current conversation with this id spent (a deleted namesake's calls don't count)."""
    statement = select(func.coalesce(func.sum(ATTEMPTS.c.cost_pusd), 0)).where(
        ATTEMPTS.c.owner == owner,
        ATTEMPTS.c.conversation_id == conversation_id,
        ATTEMPTS.c.conversation_deleted.is_(False),
    )
    return int(connection.execute(statement).scalar_one() or 0)


def spent_by_owners(connection: Connection, owners: Sequence[str]) -> dict[str, int]:
    """Spend per caller for several callers at once, in picodollars."""
    if not owners:
        return {}
    statement = (
        select(ATTEMPTS.c.owner, func.coalesce(func.sum(ATTEMPTS.c.cost_pusd), 0))
        .where(ATTEMPTS.c.owner.in_(list(owners)))
        .group_by(ATTEMPTS.c.owner)
    )
    return {owner: int(total or 0) for owner, total in connection.execute(statement).all()}


def _lock_owner(connection: Connection, owner: str) -> None:
    """Serialize budget reservations of one caller across processes (Postgres: a transaction lock).

    SQLite needs none: the gateway runs one process on it, and its units of work run one at a time on
    the SQLite lane's thread (see store/lane.py).
    """
    if connection.dialect.name == "postgresql":
        digest = hashlib.sha256(b"budget:" + owner.encode()).hexdigest()  # the same on every replica
        key = int(digest[:15], 16)
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def reserve_budget(
    connection: Connection, owner: str, budget_pusd: int, pusd: int, now: float, lifetime: float
) -> int | None:
    """Reserve `pusd` for one call while recorded plus reserved spend is below the budget; the row's pk.

    None (nothing reserved) once the caller's recorded cost and the live reservations of its other
    calls reach `budget_pusd`. The check and the insert run under one per-caller lock, so a call sees
    every reservation made before it: the calls that pass overspend by at most the last one's worth.
    """
    _lock_owner(connection, owner)
    connection.execute(
        delete(BUDGET_RESERVATIONS).where(
            BUDGET_RESERVATIONS.c.owner == owner, BUDGET_RESERVATIONS.c.expires_at < now
        )
    )
    spent = connection.execute(
        select(func.coalesce(func.sum(ATTEMPTS.c.cost_pusd), 0)).where(ATTEMPTS.c.owner == owner)
    ).scalar_one()
    reserved = connection.execute(
        select(func.coalesce(func.sum(BUDGET_RESERVATIONS.c.pusd), 0)).where(
            BUDGET_RESERVATIONS.c.owner == owner
        )
    ).scalar_one()
    if int(spent or 0) + int(reserved or 0) >= budget_pusd:
        return None
    statement = insert(BUDGET_RESERVATIONS).values(
        owner=owner, pusd=pusd, created_at=now, expires_at=now + lifetime
    )
    key = connection.execute(statement).inserted_primary_key
    return int(key[0]) if key is not None else None


def release_budget(connection: Connection, reservation: int | None) -> None:
    """Drop a reservation (in the unit of work that records the call's cost, so none is counted twice)."""
    if reservation is not None:
        connection.execute(delete(BUDGET_RESERVATIONS).where(BUDGET_RESERVATIONS.c.pk == reservation))
