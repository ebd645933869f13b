"""Unit tests of the conversations API's pure parts: item translation, item ids, field validation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from openai.types.conversations.conversation_item import ConversationItem
from pydantic import TypeAdapter

from gateway.conversation_fields import (
    CREATE_FIELDS,
    UPDATE_FIELDS,
    conversation_columns,
    page_limit,
    page_order,
)
from gateway.errors import InvalidRequest
from gateway.items import item_key, item_position, message_items
from tests.history_strategies import histories

ITEM = TypeAdapter(ConversationItem)
CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}}


def parsed(item: dict[str, Any]) -> Any:
    """Validate an item strictly against the openai SDK's own ConversationItem model."""
    return ITEM.validate_python(item)


def test_user_message_with_parts() -> None:
    message = {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "low"}},
            {"type": "file", "file": {"file_id": "file-1"}},
        ],
    }
    [item] = message_items(4, message)
    assert item == {
        "id": "msg_4",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [
            {"type": "input_text", "text": "what is this?"},
            {"type": "input_image", "image_url": "https://x/a.png", "detail": "low"},
            {"type": "input_file", "file_id": "file-1"},
        ],
    }
    assert parsed(item).content[1].detail == "low"


def test_assistant_with_text_and_tool_calls_makes_a_message_then_calls() -> None:
    message = {"role": "assistant", "content": "checking", "tool_calls": [CALL, {**CALL, "id": "call_2"}]}
    items = message_items(7, message)
    assert [i["id"] for i in items] == ["msg_7", "fc_7_0", "fc_7_1"]
    assert items[0]["content"] == [{"type": "output_text", "text": "checking", "annotations": []}]
    assert items[1] == {
        "id": "fc_7_0",
        "type": "function_call",
        "call_id": "call_1",
        "name": "lookup",
        "arguments": '{"q": 1}',
        "status": "completed",
    }
    assert [parsed(i).type for i in items] == ["message", "function_call", "function_call"]
    # tool calls only: no empty message item
    assert [
        i["type"] for i in message_items(8, {"role": "assistant", "content": None, "tool_calls": [CALL]})
    ] == ["function_call"]


def test_refusal_tool_result_and_empty_assistant() -> None:
    [refused] = message_items(1, {"role": "assistant", "content": None, "refusal": "no"})
    assert refused["content"] == [{"type": "refusal", "refusal": "no"}]
    [empty] = message_items(2, {"role": "assistant", "content": None})
    assert empty["type"] == "message" and empty["content"] == []
    [result] = message_items(3, {"role": "tool", "tool_call_id": "call_1", "content": "42"})
    assert result == {
        "id": "fco_3",
        "type": "function_call_output",
        "status": "completed",
        "call_id": "call_1",
        "output": "42",
    }
    [system] = message_items(5, {"role": "system", "content": "late rule"})
    assert system["role"] == "system" and system["content"] == [{"type": "input_text", "text": "late rule"}]
    for item in (refused, empty, result, system):
        parsed(item)


@settings(max_examples=150, deadline=None)
@given(history=histories())
def test_every_stored_message_makes_items_the_sdk_parses_in_position_order(
    history: list[dict[str, Any]],
) -> None:
    items = [item for seq, message in enumerate(history) for item in message_items(seq, message)]
    assert len(items) >= len(history)
    keys = [item_key(i) for i in items]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert len({i["id"] for i in items}) == len(items)
    for item in items:
        parsed(json.loads(json.dumps(item)))
        assert item_position(item["id"]) == item_key(item)


@pytest.mark.parametrize("bad", ["", "msg_", "msg_x", "fc_1", "item_1", "msg_1_2", "msg_12345678901"])
def test_item_position_rejects_foreign_ids(bad: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        item_position(bad)
    assert caught.value.param == "after"


def test_conversation_columns() -> None:
    columns = conversation_columns(
        {
            "metadata": {"a": "b"},
            "system_prompt": "Be brief.",
            "max_history_messages": 0,
            "max_history_tokens": None,
            "max_cost_usd": 2.5,
        },
        UPDATE_FIELDS,
    )
    assert columns == {
        "metadata_json": '{"a": "b"}',
        "system_messages": '[{"role": "system", "content": "Be brief."}]',
        "max_history_messages": 0,
        "max_history_tokens": None,
        "max_cost_pusd": 2_500_000_000_000,
    }
    assert conversation_columns({}, UPDATE_FIELDS) == {}
    assert conversation_columns({"metadata": None, "system_prompt": None}, UPDATE_FIELDS) == {
        "metadata_json": None,
        "system_messages": None,
    }
    assert conversation_columns({"metadata": {}}, UPDATE_FIELDS) == {"metadata_json": None}
    with pytest.raises(InvalidRequest):
        conversation_columns({"id": "x"}, UPDATE_FIELDS)  # only create takes an id
    assert conversation_columns({"id": "x"}, CREATE_FIELDS) == {}


def test_paging_parameters() -> None:
    assert page_limit(None, default=20, maximum=100) == 20
    assert page_limit("100", default=20, maximum=100) == 100
    for bad in ("0", "101", "-1", "1.0", "", "٣"):
        with pytest.raises(InvalidRequest):
            page_limit(bad, default=20, maximum=100)
    assert page_order(None, default="desc") == "desc" and page_order("asc", default="desc") == "asc"
    with pytest.raises(InvalidRequest):
        page_order("ASC", default="desc")
