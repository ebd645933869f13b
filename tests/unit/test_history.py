"""Unit tests of the pure history logic: system prompt split, dedupe, numbering, trimming."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.dedupe import comparable
from gateway.history import (
    Budget,
    assistant_message,
    chain_hash,
    fingerprint,
    history_digest,
    new_messages,
    number_messages,
    split_system,
    system_prompt_text,
    trim_history,
    turn_digests,
)
from tests.helpers import user


def assistant(text: str | None, **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": text, **extra}


CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def test_split_system_takes_only_leading_system_and_developer() -> None:
    messages = [
        {"role": "system", "content": "a"},
        {"role": "developer", "content": "b"},
        user("u"),
        {"role": "system", "content": "late"},
    ]
    system, rest = split_system(messages)
    assert [m["content"] for m in system] == ["a", "b"]
    assert [m["content"] for m in rest] == ["u", "late"]
    assert system_prompt_text(system) == "a\n\nb"
    assert system_prompt_text([{"role": "system", "content": [{"type": "text", "text": "parts"}]}]) == "parts"
    assert system_prompt_text(None) is None


def test_comparable_treats_missing_as_null_and_empty_content_on_tool_calls_as_null() -> None:
    stored = assistant(None, tool_calls=[CALL])
    resent = {
        "role": "assistant",
        "content": "",
        "refusal": None,
        "annotations": [],
        "audio": None,
        "function_call": None,
        "tool_calls": [{**CALL, "index": 0}],
    }
    assert comparable(stored) == comparable(resent)
    assert comparable(user("x")) == comparable({"role": "user", "content": "x", "name": None})
    assert comparable(assistant("")) != comparable(assistant(None))  # only on tool_calls messages


def test_new_messages_drops_a_leading_copy_of_the_stored_history() -> None:
    history = [user("a"), assistant("b")]
    digest = history_digest(history)
    assert new_messages([*history, user("c")], 2, digest) == [user("c")]
    assert new_messages([user("c")], 2, digest) == [user("c")]
    different = [user("a"), assistant("changed"), user("c")]
    assert new_messages(different, 2, digest) == different
    assert new_messages(history, 2, digest) == []  # exactly the history: nothing is new


def test_turn_digests_are_the_history_digest_and_the_fingerprint_of_the_new_messages() -> None:
    """The stored turn's digests, computed from one key per message, match the one-message-at-a-time ones
    that later requests compare with (new_messages, replays)."""
    new = [user("a"), {"role": "tool", "tool_call_id": "call_1", "content": "42"}]
    turn = [*new, assistant(None, tool_calls=[CALL])]
    digest, request_print = turn_digests(turn, len(new), "base")
    assert digest == history_digest(turn, start="base") == chain_hash(history_digest(new, "base"), turn[-1])
    assert request_print == fingerprint(new)
    assert digest != turn_digests(turn, len(new), "other")[0]
    assert request_print != turn_digests(turn, 1, "base")[1]


def test_assistant_message_keeps_content_tool_calls_and_refusal() -> None:
    message = {"role": "assistant", "content": None, "tool_calls": [CALL], "refusal": None, "annotations": []}
    assert assistant_message(message) == {"role": "assistant", "content": None, "tool_calls": [CALL]}
    assert assistant_message({"role": "assistant", "content": None, "refusal": "no"})["refusal"] == "no"


def numbered(bodies: list[dict[str, Any]], tokens: list[int] | None = None) -> list[Any]:
    return number_messages(
        bodies, tokens or [10] * len(bodies), next_seq=0, token_total=0, last_user_seq=0, last_user_tokens=0
    )


def test_number_messages_marks_turn_starts_at_user_messages() -> None:
    rows = numbered(
        [
            user("a"),
            assistant(None, tool_calls=[CALL]),
            {"role": "tool", "tool_call_id": "call_1", "content": "r"},
            assistant("b"),
            user("c"),
        ]
    )
    assert [r.turn_start_seq for r in rows] == [0, 0, 0, 0, 4]
    assert [r.turn_start_tokens for r in rows] == [0, 0, 0, 0, 40]


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        (Budget(), 7),
        (Budget(max_messages=0), 0),
        (Budget(max_tokens=0), 0),
        (Budget(max_messages=2), 1),  # the newest turn is one user message
        (Budget(max_messages=4), 1),  # the 4-message tool turn before it does not fit whole
        (Budget(max_messages=5), 5),
        (Budget(max_messages=7), 7),
        (Budget(max_tokens=25), 1),
        (Budget(max_tokens=60), 5),
        (Budget(max_messages=6, max_tokens=25), 1),
    ],
)
def test_trim_history_keeps_a_suffix_of_whole_turns(budget: Budget, expected: int) -> None:
    tool = {"role": "tool", "tool_call_id": "call_1", "content": "r"}
    rows = numbered(
        [
            user("a"),
            assistant("b"),
            user("c"),
            assistant(None, tool_calls=[CALL]),
            tool,
            assistant("d"),
            user("e"),
        ]
    )
    kept = trim_history(rows, budget)
    assert len(kept) == expected
    if kept and not budget.unlimited:
        assert kept[0].body["role"] == "user"
    assert [r.seq for r in kept] == [r.seq for r in rows][len(rows) - len(kept) :]
