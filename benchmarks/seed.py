"""Seed conversations straight into a gateway database, through the gateway's own store functions.

Thousands of stored messages in a few seconds, instead of thousands of HTTP turns: each conversation is
written the way the gateway writes a turn (write_turn: numbering, token counts, running totals, history
digest), then its messages get their real turn numbers.
"""

from __future__ import annotations

import functools
import time

from sqlalchemy import Connection, update

from gateway import migrate
from gateway.history import history_digest, number_messages
from gateway.identity import caller_identity
from gateway.store.conversations import TurnWrite, write_turn
from gateway.store.database import Database, create_engine
from gateway.store.tables import Message
from gateway.tokens import count_message_tokens

MODEL = "gpt-4o-mini"


def conversation_messages(count: int) -> list[dict[str, str]]:
    """`count` alternating user/assistant messages of a plausible length (count is even)."""
    messages = []
    for index in range(count // 2):
        question = f"Question {index}: what should I pack for a three-day trip to Rome in spring?"
        answer = f"[{2 * index + 1} messages] Answer {index}: light layers, comfortable shoes, an umbrella."
        messages.append({"role": "user", "content": question})
        messages.append({"role": "assistant", "content": answer})
    return messages


def _store(connection: Connection, write: TurnWrite) -> None:
    pk = write_turn(connection, None, write)
    # One write stored every message with the last turn's number: give each its own.
    turn = Message.seq // 2 + 1
    connection.execute(update(Message).where(Message.conversation_pk == pk).values(turn=turn))


async def seed_conversations(database_url: str, token: str, ids: list[str], message_count: int) -> None:
    """Create each conversation in `ids` with `message_count` stored messages, owned by `token`'s caller."""
    engine = create_engine(database_url)
    db = Database(engine, lease_seconds=60)
    try:
        await migrate.upgrade(engine)
        owner = caller_identity(token)
        bodies = conversation_messages(message_count)
        counts = [count_message_tokens(body, MODEL) for body in bodies]
        numbered = number_messages(
            bodies, counts, next_seq=0, token_total=0, last_user_seq=0, last_user_tokens=0
        )
        digest = history_digest(bodies)
        for conversation_id in ids:
            write = TurnWrite(
                owner=owner,
                conversation_id=conversation_id,
                system_messages=None,
                replace_system=False,
                messages=numbered,
                turn=message_count // 2,
                history_digest=digest,
                now=time.time(),
            )
            await db.run(functools.partial(_store, write=write))
    finally:
        await db.close()
        await engine.dispose()
