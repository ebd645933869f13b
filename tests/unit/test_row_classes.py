"""The row objects of store/tables.py hold exactly their table's columns."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import Table

from gateway.store.tables import CONVERSATIONS, ROW_CLASSES, Conversation


@pytest.mark.parametrize("cls", list(ROW_CLASSES), ids=lambda cls: cls.__name__)
def test_a_row_class_has_one_field_per_column(cls: type) -> None:
    table: Table = ROW_CLASSES[cls]
    names = [field.name for field in dataclasses.fields(cls)]
    assert len(names) == len(set(names)) and set(names) == {column.name for column in table.columns}


def test_a_conversation_reads_a_whole_row() -> None:
    names = [column.name for column in CONVERSATIONS.columns]
    row: dict[str, object] = {name: f"value of {name}" for name in names}
    row |= {"pk": 7, "message_count": 20, "window_start": 4, "max_history_tokens": None}
    conversation = Conversation(**row)
    assert {name: getattr(conversation, name) for name in names} == row


def test_a_column_left_out_reads_as_what_a_new_row_gets() -> None:
    conversation = Conversation(pk=1, owner="o", id="c")
    assert conversation.summary_text is None and conversation.id == "c"
    assert conversation.message_count == 0 and conversation.window_start == 0
    defaults = {
        column.name: column.default.arg for column in CONVERSATIONS.columns if column.default is not None
    }
    assert {name: getattr(conversation, name) for name in defaults} == defaults
