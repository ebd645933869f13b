"""Gateway keys: insert, look up by secret hash, list with their spend, revoke. Only hashes are stored."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from gateway.errors import KeyExists
from gateway.keys import KeyInfo
from gateway.store.rows import load_all, load_first
from gateway.store.spend import spent_by_owners
from gateway.store.tables import API_KEYS, ApiKey


def _info(row: ApiKey, spent: int = 0) -> KeyInfo:
    return KeyInfo(
        name=row.name,
        identity=row.secret_hash,
        budget_pusd=row.budget_pusd,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        spent_pusd=spent,
    )


def insert_key(
    connection: Connection, name: str, secret_hash: str, budget_pusd: int | None, now: float
) -> KeyInfo:
    """Store a new key; a name already taken (even by a revoked key) is a 409."""
    taken = connection.execute(select(API_KEYS.c.pk).where(API_KEYS.c.name == name))
    if taken.first() is not None:
        raise KeyExists(f"A key named '{name}' already exists; key names are never reused.", param="name")
    row: dict[str, Any] = {
        "name": name,
        "secret_hash": secret_hash,
        "budget_pusd": budget_pusd,
        "created_at": now,
    }
    try:
        pk = connection.execute(insert(API_KEYS).returning(API_KEYS.c.pk), row).scalar_one()
    except IntegrityError:  # a concurrent create of the same name won the race
        raise KeyExists(f"A key named '{name}' already exists.", param="name") from None
    return _info(ApiKey(pk=pk, revoked_at=None, **row))


def find_active_key(connection: Connection, secret_hash: str) -> KeyInfo | None:
    """The unrevoked key whose secret hashes to `secret_hash` (one unique-index lookup), or None."""
    statement = select(API_KEYS).where(API_KEYS.c.secret_hash == secret_hash, API_KEYS.c.revoked_at.is_(None))
    row = load_first(connection, ApiKey, statement)
    return _info(row) if row is not None else None


def has_active_keys(connection: Connection) -> bool:
    """True when at least one unrevoked key exists."""
    statement = select(API_KEYS.c.pk).where(API_KEYS.c.revoked_at.is_(None)).limit(1)
    return connection.execute(statement).first() is not None


def list_keys(connection: Connection) -> list[KeyInfo]:
    """Every key, oldest first, each with what its caller has spent so far."""
    rows = load_all(connection, ApiKey, select(API_KEYS).order_by(API_KEYS.c.created_at, API_KEYS.c.pk))
    spent = spent_by_owners(connection, [row.secret_hash for row in rows])
    return [_info(row, spent.get(row.secret_hash, 0)) for row in rows]


def revoke_key(connection: Connection, name: str, now: float) -> KeyInfo | None:
    """Mark the key revoked (idempotent: an already revoked key keeps its time); None when unknown."""
    connection.execute(
        update(API_KEYS)
        .where(API_KEYS.c.name == name, API_KEYS.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    row = load_first(connection, ApiKey, select(API_KEYS).where(API_KEYS.c.name == name))
    if row is None:
        return None
    spent = spent_by_owners(connection, [row.secret_hash])
    return _info(row, spent.get(row.secret_hash, 0))
