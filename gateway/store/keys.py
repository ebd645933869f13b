"""Gateway keys: insert, look up by secret hash, list with their spend, revoke. Only hashes are stored."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.errors import KeyExists
from gateway.keys import KeyInfo
from gateway.store.spend import spent_by_owners
from gateway.store.tables import ApiKey


def _info(row: ApiKey, spent: int = 0) -> KeyInfo:
    return KeyInfo(
        name=row.name,
        identity=row.secret_hash,
        budget_pusd=row.budget_pusd,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        spent_pusd=spent,
    )


async def insert_key(
    session: AsyncSession, name: str, secret_hash: str, budget_pusd: int | None, now: float
) -> KeyInfo:
    """Store a new key; a name already taken (even by a revoked key) is a 409."""
    taken = await session.execute(select(ApiKey.pk).where(ApiKey.name == name))
    if taken.first() is not None:
        raise KeyExists(f"A key named '{name}' already exists; key names are never reused.", param="name")
    row = ApiKey(name=name, secret_hash=secret_hash, budget_pusd=budget_pusd, created_at=now)
    session.add(row)
    try:
        await session.flush()
    except IntegrityError:  # a concurrent create of the same name won the race
        raise KeyExists(f"A key named '{name}' already exists.", param="name") from None
    return _info(row)


async def find_active_key(session: AsyncSession, secret_hash: str) -> KeyInfo | None:
    """The unrevoked key whose secret hashes to `secret_hash` (one unique-index lookup), or None."""
    statement = select(ApiKey).where(ApiKey.secret_hash == secret_hash, ApiKey.revoked_at.is_(None))
    row = (await session.execute(statement)).scalar_one_or_none()
    return _info(row) if row is not None else None


async def has_active_keys(session: AsyncSession) -> bool:
    """True when at least one unrevoked key exists."""
    statement = select(ApiKey.pk).where(ApiKey.revoked_at.is_(None)).limit(1)
    return (await session.execute(statement)).first() is not None


async def list_keys(session: AsyncSession) -> list[KeyInfo]:
    """Every key, oldest first, each with what its caller has spent so far."""
    rows = list((await session.execute(select(ApiKey).order_by(ApiKey.created_at, ApiKey.pk))).scalars())
    spent = await spent_by_owners(session, [row.secret_hash for row in rows])
    return [_info(row, spent.get(row.secret_hash, 0)) for row in rows]


async def revoke_key(session: AsyncSession, name: str, now: float) -> KeyInfo | None:
    """Mark the key revoked (idempotent: an already revoked key keeps its time); None when unknown."""
    await session.execute(
        update(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None)).values(revoked_at=now)
    )
    row = (await session.execute(select(ApiKey).where(ApiKey.name == name))).scalar_one_or_none()
    if row is None:
        return None
    spent = await spent_by_owners(session, [row.secret_hash])
    return _info(row, spent.get(row.secret_hash, 0))
