"""The hot path's read-only Conversation holds exactly what `Conversation(**row)` would."""

from __future__ import annotations

from sqlalchemy import inspect

from gateway.store.tables import Conversation, read_conversation


def test_a_read_conversation_reads_like_a_constructed_one() -> None:
    names = [column.name for column in Conversation.__table__.columns]
    row: dict[str, object] = {name: f"value of {name}" for name in names}
    row |= {"pk": 7, "message_count": 20, "window_start": 4, "max_history_tokens": None}
    read, built = read_conversation(row), Conversation(**row)
    assert {name: getattr(read, name) for name in names} == {name: getattr(built, name) for name in names}
    assert inspect(read).transient and not inspect(read).modified


def test_a_column_left_out_reads_as_none() -> None:
    conversation = read_conversation({"pk": 1, "owner": "o", "id": "c"})
    assert conversation.summary_text is None and conversation.id == "c"
