"""Stored Responses-API responses: insert (in a turn's transaction), look up, find a retry, fork, delete."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from gateway.history import StoredMessage, history_digest
from gateway.store import statements
from gateway.store.rows import load_all, load_first
from gateway.store.tables import CONVERSATIONS, MESSAGES, RESPONSES, Conversation, Message, StoredResponse

_INSERT = RESPONSES.insert()


def insert_response(connection: Connection, values: dict[str, Any]) -> None:
    """Insert one response row (a unit-of-work step: runs in the turn's own transaction)."""
    statements.execute(connection, _INSERT, values)


def get_response(connection: Connection, owner: str, response_id: str) -> StoredResponse | None:
    """The caller's stored response with this id, or None (another caller's is None too)."""
    statement = select(RESPONSES).where(RESPONSES.c.owner == owner, RESPONSES.c.id == response_id)
    return load_first(connection, StoredResponse, statement)


def find_retried(
    connection: Connection, owner: str, request_hash: str, idempotency_key: str | None, since: float
) -> StoredResponse | None:
    """The newest response stored since `since` for the same request body (and the same key, if any)."""
    statement = select(RESPONSES).where(
        RESPONSES.c.owner == owner,
        RESPONSES.c.request_hash == request_hash,
        RESPONSES.c.created_at >= since,
    )
    if idempotency_key is not None:
        statement = statement.where(RESPONSES.c.idempotency_key == idempotency_key)
    statement = statement.order_by(RESPONSES.c.created_at.desc()).limit(1)
    return load_first(connection, StoredResponse, statement)


def find_turn_response(
    connection: Connection, owner: str, conversation_id: str, turn: int
) -> StoredResponse | None:
    """The response stored as this turn of the conversation, if the turn was a response."""
    statement = select(RESPONSES).where(
        RESPONSES.c.owner == owner,
        RESPONSES.c.conversation_id == conversation_id,
        RESPONSES.c.turn == turn,
    )
    return load_first(connection, StoredResponse, statement.limit(1))


def delete_response(connection: Connection, response: StoredResponse) -> None:
    """Forget a response (its turn stays in the conversation)."""
    connection.execute(delete(RESPONSES).where(RESPONSES.c.pk == response.pk))


def read_prefix(connection: Connection, conversation: Conversation, end: int) -> list[StoredMessage]:
    """The conversation's stored messages before seq `end`, oldest first."""
    statement = (
        select(
            MESSAGES.c.seq,
            MESSAGES.c.body,
            MESSAGES.c.tokens,
            MESSAGES.c.turn_start_seq,
            MESSAGES.c.turn_start_tokens,
        )
        .where(MESSAGES.c.conversation_pk == conversation.pk, MESSAGES.c.seq < end)
        .order_by(MESSAGES.c.seq)
    )
    rows = connection.execute(statement).all()
    return [StoredMessage(row[0], json.loads(row[1]), row[2], row[3], row[4]) for row in rows]


def fork_conversation(
    connection: Connection, source: Conversation, new_id: str, end: int, turn: int, now: float
) -> Conversation:
    """A new conversation of the same caller holding a copy of `source`'s first `end` messages.

    It takes the source's system prompt and history limits; the source is left untouched.
    """
    statement = select(MESSAGES).where(MESSAGES.c.conversation_pk == source.pk, MESSAGES.c.seq < end)
    rows = load_all(connection, Message, statement.order_by(MESSAGES.c.seq))
    bodies = [json.loads(row.body) for row in rows]
    last_user = next((row for row in reversed(rows) if row.role == "user"), None)
    values = {
        "owner": source.owner,
        "id": new_id,
        "system_messages": source.system_messages,
        "metadata_json": None,
        "max_history_messages": source.max_history_messages,
        "max_history_tokens": source.max_history_tokens,
        "max_cost_pusd": source.max_cost_pusd,
        "message_count": len(rows),
        "token_count": sum(row.tokens for row in rows),
        "turn_count": turn,
        "history_hash": history_digest(bodies),
        "last_user_seq": last_user.seq if last_user else 0,
        "last_user_tokens": last_user.turn_start_tokens if last_user else 0,
        "window_start": 0,
        "created_at": now,
        "updated_at": now,
    }
    key = connection.execute(insert(CONVERSATIONS), values).inserted_primary_key
    assert key is not None
    pk = int(key[0])
    if rows:
        connection.execute(
            insert(MESSAGES),
            [
                {
                    "conversation_pk": pk,
                    "seq": row.seq,
                    "turn": row.turn,
                    "role": row.role,
                    "body": row.body,
                    "tokens": row.tokens,
                    "turn_start_seq": row.turn_start_seq,
                    "turn_start_tokens": row.turn_start_tokens,
                    "created_at": row.created_at,
                }
                for row in rows
            ],
        )
    forked = load_first(connection, Conversation, select(CONVERSATIONS).where(CONVERSATIONS.c.pk == pk))
    assert forked is not None
    return forked
