"""Dashboard sessions: stored by the hash of the cookie's random value, so the table holds no live cookie."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.store.tables import UiSession


async def insert_session(
    session: AsyncSession, token_hash: str, identity: str, now: float, expires_at: float
) -> None:
    """Store a new sign-in, and drop the sessions that have expired (so the table does not grow)."""
    await session.execute(delete(UiSession).where(UiSession.expires_at <= now))
    session.add(UiSession(token_hash=token_hash, identity=identity, created_at=now, expires_at=expires_at))
    await session.flush()


async def find_session(session: AsyncSession, token_hash: str, now: float) -> str | None:
    """The identity signed in with this cookie hash, or None when unknown or expired."""
    statement = select(UiSession.identity).where(
        UiSession.token_hash == token_hash, UiSession.expires_at > now
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def delete_session(session: AsyncSession, token_hash: str) -> None:
    """Forget a sign-in (sign-out, or a session whose key was revoked)."""
    await session.execute(delete(UiSession).where(UiSession.token_hash == token_hash))
