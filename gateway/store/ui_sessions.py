"""Dashboard sessions: stored by the hash of the cookie's random value, so the table holds no live cookie."""

from __future__ import annotations

from sqlalchemy import Connection, delete, insert, select

from gateway.store.tables import UI_SESSIONS


def insert_session(
    connection: Connection, token_hash: str, identity: str, now: float, expires_at: float
) -> None:
    """Store a new sign-in, and drop the sessions that have expired (so the table does not grow)."""
    connection.execute(delete(UI_SESSIONS).where(UI_SESSIONS.c.expires_at <= now))
    row = {"token_hash": token_hash, "identity": identity, "created_at": now, "expires_at": expires_at}
    connection.execute(insert(UI_SESSIONS), row)


def find_session(connection: Connection, token_hash: str, now: float) -> str | None:
    """The identity signed in with this cookie hash, or None when unknown or expired."""
    statement = select(UI_SESSIONS.c.identity).where(
        UI_SESSIONS.c.token_hash == token_hash, UI_SESSIONS.c.expires_at > now
    )
    return connection.execute(statement).scalar_one_or_none()


def delete_session(connection: Connection, token_hash: str) -> None:
    """Forget a sign-in (sign-out, or a session whose key was revoked)."""
    connection.execute(delete(UI_SESSIONS).where(UI_SESSIONS.c.token_hash == token_hash))
