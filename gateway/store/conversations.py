"""Conversation queries: state, the budgeted history window, atomic turn append, listing, delete."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.history import Budget, StoredMessage, window_bounds
from gateway.store.tables import Attempt, Conversation, Message


async def get_conversation(session: AsyncSession, owner: str, conversation_id: str) -> Conversation | None:
    """The caller's conversation with this id, or None."""
    statement = select(Conversation).where(Conversation.owner == owner, Conversation.id == conversation_id)
    return (await session.execute(statement)).scalar_one_or_none()


async def load_window(
    session: AsyncSession, conversation: Conversation, budget: Budget
) -> list[StoredMessage]:
    """The stored messages the budget may send, oldest first, in one indexed query.

    Turn-start seq and cumulative tokens only grow along a conversation, so each limit is a range bound
    on an indexed column and the query reads only the candidate suffix, however long the history is.
    """
    if budget.max_messages == 0 or budget.max_tokens == 0 or conversation.message_count == 0:
        return []
    min_seq, min_tokens = window_bounds(budget, conversation.message_count, conversation.token_count)
    statement = (
        select(Message.seq, Message.body, Message.tokens, Message.turn_start_seq, Message.turn_start_tokens)
        .where(Message.conversation_pk == conversation.pk)
        .order_by(Message.seq)
    )
    if budget.max_messages is not None:
        statement = statement.where(Message.seq >= min_seq, Message.turn_start_seq >= min_seq)
    if budget.max_tokens is not None:
        statement = statement.where(Message.turn_start_tokens >= min_tokens)
    rows = (await session.execute(statement)).all()
    return [StoredMessage(row[0], json.loads(row[1]), row[2], row[3], row[4]) for row in rows]


@dataclass(frozen=True)
class TurnWrite:
    """Everything one successful turn stores, computed by the caller."""

    owner: str
    conversation_id: str
    system_messages: list[dict[str, Any]] | None
    replace_system: bool
    messages: Sequence[StoredMessage]
    turn: int
    history_digest: str
    now: float


async def append_turn(session: AsyncSession, conversation: Conversation | None, write: TurnWrite) -> int:
    """Insert the turn's messages and update (or create) the conversation; returns the conversation pk."""
    token_total = sum(m.tokens for m in write.messages)
    last_user = next((m for m in reversed(write.messages) if m.body.get("role") == "user"), None)
    values: dict[str, Any] = {
        "message_count": (conversation.message_count if conversation else 0) + len(write.messages),
        "token_count": (conversation.token_count if conversation else 0) + token_total,
        "turn_count": write.turn,
        "history_hash": write.history_digest,
        "updated_at": write.now,
    }
    if last_user is not None:
        values["last_user_seq"] = last_user.seq
        values["last_user_tokens"] = last_user.turn_start_tokens
    if write.replace_system:
        values["system_messages"] = json.dumps(write.system_messages) if write.system_messages else None
    if conversation is None:
        created = Conversation(owner=write.owner, id=write.conversation_id, created_at=write.now, **values)
        created.system_messages = values.get("system_messages")
        session.add(created)
        await session.flush()
        pk = created.pk
    else:
        pk = conversation.pk
        await session.execute(update(Conversation).where(Conversation.pk == pk).values(**values))
    if write.messages:
        await session.execute(
            insert(Message),
            [
                {
                    "conversation_pk": pk,
                    "seq": m.seq,
                    "turn": write.turn,
                    "role": str(m.body.get("role")),
                    "body": json.dumps(m.body, ensure_ascii=False),
                    "tokens": m.tokens,
                    "turn_start_seq": m.turn_start_seq,
                    "turn_start_tokens": m.turn_start_tokens,
                    "created_at": write.now,
                }
                for m in write.messages
            ],
        )
    return pk


async def list_messages(
    session: AsyncSession, conversation: Conversation, *, limit: int | None = None, after: int | None = None
) -> list[tuple[int, dict[str, Any], float]]:
    """Stored messages oldest first as (seq, message, created_at); `after` is a seq."""
    statement = (
        select(Message.seq, Message.body, Message.created_at)
        .where(Message.conversation_pk == conversation.pk)
        .order_by(Message.seq)
    )
    if after is not None:
        statement = statement.where(Message.seq > after)
    if limit is not None:
        statement = statement.limit(limit)
    rows = (await session.execute(statement)).all()
    return [(row[0], json.loads(row[1]), row[2]) for row in rows]


async def delete_conversation(session: AsyncSession, conversation: Conversation) -> None:
    """Remove a conversation and its messages; its request-log rows keep usage but lose their content."""
    await session.execute(delete(Message).where(Message.conversation_pk == conversation.pk))
    await session.execute(delete(Conversation).where(Conversation.pk == conversation.pk))
    await session.execute(
        update(Attempt)
        .where(Attempt.owner == conversation.owner, Attempt.conversation_id == conversation.id)
        .values(response_body=None, fingerprint=None, error=None, conversation_deleted=True)
    )
