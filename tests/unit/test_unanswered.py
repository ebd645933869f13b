"""Unanswered tool calls in the replayed history are left out; the turn in progress is untouched."""

from __future__ import annotations

from typing import Any

from gateway.history import StoredMessage, number_messages
from gateway.unanswered import answered_only, sendable_history

Message = dict[str, Any]


def user(text: str) -> Message:
    return {"role": "user", "content": text}


def call(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}


def calls(*ids: str, content: Any = None) -> Message:
    return {"role": "assistant", "content": content, "tool_calls": [call(i) for i in ids]}


def result(call_id: str) -> Message:
    return {"role": "tool", "tool_call_id": call_id, "content": "ok"}


def window(*bodies: Message) -> list[StoredMessage]:
    return number_messages(
        list(bodies), [5] * len(bodies), next_seq=0, token_total=0, last_user_seq=0, last_user_tokens=0
    )


def sent(history: list[StoredMessage], new: list[Message]) -> list[Message]:
    return [m.body for m in sendable_history(history, new)]


def test_a_forced_tool_call_never_answered_is_left_out() -> None:
    history = window(user("extract"), calls("c1"))
    assert sent(history, [user("next")]) == [user("extract")]
    # ... and in the middle of the history, before later turns
    history = window(user("extract"), calls("c1"), user("next"), {"role": "assistant", "content": "ok"})
    assert sent(history, [user("third")]) == [user("extract"), user("next"), history[3].body]


def test_content_is_kept_and_answered_calls_stay() -> None:
    history = window(
        user("q"),
        calls("c1", "c2", content="let me look"),
        result("c1"),
        {"role": "assistant", "content": "done"},
    )
    trimmed = sent(history, [user("more")])
    assert trimmed[1] == {"role": "assistant", "content": "let me look", "tool_calls": [call("c1")]}
    assert trimmed[2:] == [result("c1"), {"role": "assistant", "content": "done"}]
    text_only = sent(window(user("q"), calls("c9", content="thinking")), [user("more")])
    assert text_only[1] == {"role": "assistant", "content": "thinking"}
    assert sent(window(user("q"), calls("c9", content="")), [user("more")]) == [user("q")]


def test_the_turn_in_progress_is_answered_by_this_request() -> None:
    history = window(user("q"), calls("c1", "c2"))
    assert sent(history, [result("c1"), result("c2")]) == [h.body for h in history]
    # answered across the stored part and the new part: left as it is too
    history = window(user("q"), calls("c1", "c2"), result("c1"))
    assert sent(history, [result("c2")]) == [h.body for h in history]


def test_stored_bodies_never_change() -> None:
    message = calls("c1", content="x")
    assert answered_only(message, set()) == {"role": "assistant", "content": "x"}
    assert message["tool_calls"] == [call("c1")]
    answered = window(user("q"), calls("c1"), result("c1"), {"role": "assistant", "content": "a"})
    assert sendable_history(answered, [user("n")]) == answered
