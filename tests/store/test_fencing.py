"""A turn composed from an old state of its conversation is refused, never interleaved with a newer turn."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import migrate
from gateway.errors import ConversationBusy
from gateway.history import StoredMessage
from gateway.store.conversations import TurnWrite, get_conversation, list_messages, write_turn
from gateway.store.database import open_database


def write(turn: int, first_seq: int, text: str) -> TurnWrite:
    """One user message and its reply, numbered from `first_seq`."""
    messages = [
        StoredMessage(first_seq, {"role": "user", "content": text}, 3, first_seq, 0),
        StoredMessage(first_seq + 1, {"role": "assistant", "content": f"re: {text}"}, 3, first_seq, 0),
    ]
    return TurnWrite("owner", "conv", None, False, messages, turn, f"digest-{turn}", 1.0)


async def test_a_stale_turn_is_refused(tmp_path: Path) -> None:
    db = open_database(f"sqlite+aiosqlite:///{tmp_path / 'fence.db'}", lease_seconds=30)
    await migrate.upgrade(db)
    try:
        await db.run(lambda c: write_turn(c, None, write(1, 0, "one")))
        stale = await db.run(lambda c: get_conversation(c, "owner", "conv"))
        assert stale is not None
        await db.run(lambda c: write_turn(c, stale, write(2, 2, "two")))
        with pytest.raises(ConversationBusy):  # composed before "two" was stored
            await db.run(lambda c: write_turn(c, stale, write(2, 2, "late")))
        with pytest.raises(ConversationBusy):  # a second "first turn" of a conversation that now exists
            await db.run(lambda c: write_turn(c, None, write(1, 0, "also first")))
        conversation = await db.run(lambda c: get_conversation(c, "owner", "conv"))
        assert conversation is not None and conversation.message_count == 4
        rows = await db.run(lambda c: list_messages(c, conversation))
        assert [body["content"] for _, body, _ in rows] == ["one", "re: one", "two", "re: two"]
    finally:
        await db.close()
