"""What a turn sends upstream, and the budget and strategy it is composed under: pure functions."""

from __future__ import annotations

import json
from typing import Any

from gateway.composition import (
    adds_stream_usage,
    compose,
    history_budget,
    history_strategy,
    prompt_cache_key,
)
from gateway.exchange import ChatCall, PendingTurn
from gateway.history import Budget, StoredMessage
from gateway.store.conversations import SummaryState
from gateway.store.tables import Conversation
from gateway.window import summary_message

SYSTEM = {"role": "system", "content": "be brief"}
NEW = {"role": "user", "content": "and now?"}


def pending(body: dict[str, Any], **turn: Any) -> PendingTurn:
    call_fields = {k: turn.pop(k) for k in ("instructions", "header_strategy") if k in turn}
    call = ChatCall(
        owner="caller",
        token="t",
        conversation_id="c",
        body=body,
        raw=json.dumps(body).encode(),
        headers={},
        request_id="r",
        **call_fields,
    )
    return PendingTurn(call=call, started=0.0, new=[NEW], **turn)


def stored(seq: int, content: str) -> StoredMessage:
    return StoredMessage(seq, {"role": "user", "content": content}, 3, seq, 3 * seq)


def test_the_body_keeps_the_clients_fields_in_order_then_adds_the_cache_key_and_usage() -> None:
    body = {"model": "m", "stream": True, "temperature": 0.2, "messages": [NEW]}
    composition = compose(pending(body), cache_key=True)
    order = ["model", "stream", "temperature", "messages", "prompt_cache_key", "stream_options"]
    assert list(composition.fields) == order
    assert composition.fields["prompt_cache_key"] == prompt_cache_key("caller", "c")
    assert composition.fields["stream_options"] == {"include_usage": True}
    assert body == {"model": "m", "stream": True, "temperature": 0.2, "messages": [NEW]}  # not changed


def test_a_clients_own_cache_key_and_stream_options_stay() -> None:
    body = {"model": "m", "stream": True, "prompt_cache_key": "mine", "stream_options": {"x": 1}}
    composition = compose(pending(body), cache_key=True)
    assert composition.fields["prompt_cache_key"] == "mine"
    assert composition.fields["stream_options"] == {"x": 1, "include_usage": True}
    assert not compose(pending({"model": "m"}), cache_key=False).fields.keys() & {
        "prompt_cache_key",
        "stream_options",
    }


def test_messages_go_system_then_summary_then_history_then_new() -> None:
    history = [stored(4, "old"), stored(5, "older")]
    summary = SummaryState("earlier talk", 5, 4, 0.0)
    turn = pending({"model": "m"}, system_messages=[SYSTEM], history=history, summary=summary)
    composition = compose(turn, cache_key=False)
    rendered = json.loads(composition.render())
    assert rendered["messages"] == [
        SYSTEM,
        summary_message("earlier talk"),
        {"role": "user", "content": "old"},
        {"role": "user", "content": "older"},
        NEW,
    ]


def test_instructions_come_first_and_replace_the_stored_prompt_unless_one_was_sent() -> None:
    own = {"role": "system", "content": "this turn only"}
    kept = pending({"model": "m"}, instructions=[own], system_messages=[SYSTEM])
    assert compose(kept, cache_key=False).system == [own]
    sent = pending({"model": "m"}, instructions=[own], system_messages=[SYSTEM], replace_system=True)
    assert compose(sent, cache_key=False).system == [own, SYSTEM]


def test_the_budget_takes_headers_then_the_conversations_settings_then_the_default() -> None:
    conversation = Conversation(max_history_messages=8, max_history_tokens=None)
    assert history_budget(Budget(), Budget(20, 1000), conversation) == Budget(8, 1000)
    assert history_budget(Budget(2, None), Budget(20, 1000), conversation) == Budget(2, 1000)


def test_the_strategy_takes_the_header_then_the_conversation_then_the_default() -> None:
    conversation = Conversation(history_strategy="stable")
    assert history_strategy(pending({}).call, None, "sliding") == "sliding"
    assert history_strategy(pending({}).call, conversation, "sliding") == "stable"
    assert history_strategy(pending({}, header_strategy="summarize").call, conversation, "sliding") == (
        "summarize"
    )


def test_stream_usage_is_added_only_for_streams_that_did_not_ask_for_it() -> None:
    assert adds_stream_usage({"stream": True})
    assert not adds_stream_usage({"stream": True, "stream_options": {"include_usage": True}})
    assert not adds_stream_usage({"stream": False})
