"""Seed conversations straight into a gateway database, through the gateway's own store functions.

Thousands of stored messages in a few seconds, instead of thousands of HTTP turns: each conversation is
written the way the gateway writes a turn (write_turn: numbering, token counts, running totals, history
digest), then its messages get their real turn numbers.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, update
from sqlalchemy.engine import make_url

from gateway import migrate
from gateway.history import history_digest, number_messages
from gateway.identity import caller_identity
from gateway.store.conversations import TurnWrite, write_turn
from gateway.store.database import open_database
from gateway.store.tables import ATTEMPTS, CONVERSATIONS, MESSAGES
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
    turn = MESSAGES.c.seq // 2 + 1
    connection.execute(update(MESSAGES).where(MESSAGES.c.conversation_pk == pk).values(turn=turn))


async def seed_conversations(database_url: str, token: str, ids: list[str], message_count: int) -> None:
    """Create each conversation in `ids` with `message_count` stored messages, owned by `token`'s caller."""
    db = open_database(database_url, lease_seconds=60)
    try:
        await migrate.upgrade(db)
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


@dataclass(frozen=True)
class Growth:
    """What a growth seeding added, and the database's size before and after."""

    conversations: int
    messages: int
    bytes_before: int
    bytes_after: int

    @property
    def bytes_per_message(self) -> float:
        """Database growth per stored message (its share of the conversations, request log and indexes)."""
        return (self.bytes_after - self.bytes_before) / self.messages if self.messages else 0.0


def _growth_rows(owner: str, prefix: str, conversations: int, turns: int) -> tuple[dict[str, Any], list[Any]]:
    """One conversation's row (without its id) and its messages' rows, as a turn would have stored them."""
    bodies = conversation_messages(2 * turns)
    counts = [count_message_tokens(body, MODEL) for body in bodies]
    numbered = number_messages(bodies, counts, next_seq=0, token_total=0, last_user_seq=0, last_user_tokens=0)
    last_user = numbered[-2]
    now = time.time()
    conversation = {
        "owner": owner,
        "message_count": len(numbered),
        "token_count": sum(counts),
        "turn_count": turns,
        "history_hash": history_digest(bodies),
        "last_user_seq": last_user.seq,
        "last_user_tokens": last_user.turn_start_tokens,
        "created_at": now,
        "updated_at": now,
    }
    messages = [
        (m.seq, m.seq // 2 + 1, m.role, m.json, m.tokens, m.turn_start_seq, m.turn_start_tokens, now)
        for m in numbered
    ]
    return conversation, messages


def _attempt(owner: str, conversation_id: str, turn: int, now: float) -> dict[str, Any]:
    reply = f"[{2 * turn - 1} messages] Answer {turn - 1}: light layers, comfortable shoes, an umbrella."
    body = json.dumps(
        {
            "id": f"chatcmpl-{conversation_id}-{turn}",
            "object": "chat.completion",
            "created": int(now),
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 20 * turn, "completion_tokens": 20, "total_tokens": 20 * turn + 20},
        }
    )
    return {
        "owner": owner,
        "conversation_id": conversation_id,
        "request_id": f"{conversation_id}-{turn}",
        "upstream_request_id": f"req_{conversation_id}_{turn}",
        "endpoint": "/v1/chat/completions",
        "model": MODEL,
        "response_model": "gpt-4o-mini-2024-07-18",
        "stream": False,
        "status": 200,
        "latency_ms": 1.0,
        "prompt_tokens": 20 * turn,
        "completion_tokens": 20,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "history_tokens": 20 * (turn - 1),
        "history_messages": 2 * (turn - 1),
        "cost_pusd": 1000,
        "history_cost_pusd": 500,
        "turn": turn,
        "fingerprint": "0" * 64,
        "response_body": body,
        "created_at": now,
        "conversation_deleted": False,
    }


def _columns(table: Any) -> list[str]:
    """The columns the growth rows fill: those the gateway's own rows set (the rest keep their defaults)."""
    sample = _attempt("o", "c", 1, 0.0) if table is ATTEMPTS else {**_CONVERSATION_KEYS}
    return [column.name for column in table.columns if column.name in sample]


_CONVERSATION_KEYS = dict.fromkeys(
    [
        *("owner", "id", "message_count", "token_count", "turn_count", "history_hash"),
        *("last_user_seq", "last_user_tokens", "created_at", "updated_at"),
    ]
)


def _growth_tables(owner: str, prefix: str, conversations: int, turns: int) -> dict[str, Any]:
    """Rows (tuples in `_columns` order) of the conversations, messages and request log to add."""
    conversation, messages = _growth_rows(owner, prefix, conversations, turns)
    ids = [f"{prefix}-{n}" for n in range(conversations)]
    now = time.time()
    attempt_columns = _columns(ATTEMPTS)
    return {
        "ids": ids,
        "conversations": [
            tuple(row.get(c) for c in _columns(CONVERSATIONS))
            for row in ({**conversation, "id": i} for i in ids)
        ],
        "messages": messages,
        "attempts": [
            tuple(attempt.get(c) for c in attempt_columns)
            for i in ids
            for attempt in (_attempt(owner, i, turn, now) for turn in range(1, turns + 1))
        ],
    }


_MESSAGE_COLUMNS = [
    "conversation_pk",
    "seq",
    "turn",
    "role",
    "body",
    "tokens",
    "turn_start_seq",
    "turn_start_tokens",
]


async def _grow_postgres(dsn: str, owner: str, prefix: str, rows: dict[str, Any]) -> tuple[int, int]:
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        size = "SELECT pg_database_size(current_database())"
        before = int(await connection.fetchval(size))
        async with connection.transaction():
            columns = _columns(CONVERSATIONS)
            await connection.copy_records_to_table(
                "conversations", records=rows["conversations"], columns=columns
            )
            found = await connection.fetch(
                "SELECT id, pk FROM conversations WHERE owner = $1 AND id LIKE $2", owner, f"{prefix}-%"
            )
            keys = {row["id"]: row["pk"] for row in found}
            messages = [(keys[i], *m) for i in rows["ids"] for m in rows["messages"]]
            await connection.copy_records_to_table(
                "messages", records=messages, columns=[*_MESSAGE_COLUMNS, "created_at"]
            )
            attempts = rows["attempts"]
            await connection.copy_records_to_table("attempts", records=attempts, columns=_columns(ATTEMPTS))
        await connection.execute("VACUUM ANALYZE")
        return before, int(await connection.fetchval(size))
    finally:
        await connection.close()


def _grow_sqlite(path: str, owner: str, prefix: str, rows: dict[str, Any]) -> tuple[int, int]:
    import sqlite3

    def size(connection: sqlite3.Connection) -> int:
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        return int(pages) * int(connection.execute("PRAGMA page_size").fetchone()[0])

    connection = sqlite3.connect(path, timeout=30)
    try:
        before = size(connection)
        with connection:
            columns = _columns(CONVERSATIONS)
            marks = ", ".join("?" * len(columns))
            connection.executemany(
                f"INSERT INTO conversations ({', '.join(columns)}) VALUES ({marks})", rows["conversations"]
            )
            keys = dict(
                connection.execute(
                    "SELECT id, pk FROM conversations WHERE owner = ? AND id LIKE ?", (owner, f"{prefix}-%")
                ).fetchall()
            )
            messages = [(keys[i], *m) for i in rows["ids"] for m in rows["messages"]]
            names = [*_MESSAGE_COLUMNS, "created_at"]
            connection.executemany(
                f"INSERT INTO messages ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", messages
            )
            columns = _columns(ATTEMPTS)
            connection.executemany(
                f"INSERT INTO attempts ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                rows["attempts"],
            )
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return before, size(connection)
    finally:
        connection.close()


async def seed_growth(
    database_url: str, token: str, prefix: str, *, conversations: int = 10_000, turns: int = 10
) -> Growth:
    """Add `conversations` conversations of `turns` turns each (messages and request-log rows) in bulk."""
    db = open_database(database_url, lease_seconds=60, pool_size=1)
    try:
        await migrate.upgrade(db)
    finally:
        await db.close()
    owner = caller_identity(token)
    rows = _growth_tables(owner, prefix, conversations, turns)
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        before, after = await _grow_postgres(dsn, owner, prefix, rows)
    else:
        before, after = _grow_sqlite(str(url.database), owner, prefix, rows)
    return Growth(conversations, conversations * len(rows["messages"]), before, after)
