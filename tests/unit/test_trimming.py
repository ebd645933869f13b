"""Property tests of history trimming: random histories with tool calls against random budgets."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.history import (
    Budget,
    StoredMessage,
    compose_messages,
    select_window,
    trim_history,
    unanswered_tool_results,
)
from tests.history_strategies import budgets, stored_histories

SYSTEM = [{"role": "system", "content": "You are terse."}]


def reference_window(stored: list[StoredMessage], budget: Budget) -> list[StoredMessage]:
    """The longest suffix of whole turns (a user message + what follows) that fits, by brute force."""
    starts = [i for i, m in enumerate(stored) if m.body["role"] == "user"]
    best: list[StoredMessage] = []
    for start in reversed(starts):
        candidate = stored[start:]
        fits_messages = budget.max_messages is None or len(candidate) <= budget.max_messages
        fits_tokens = budget.max_tokens is None or sum(m.tokens for m in candidate) <= budget.max_tokens
        if not (fits_messages and fits_tokens):
            break
        best = candidate
    return best


def assert_valid_openai_sequence(messages: list[dict[str, Any]]) -> None:
    """What OpenAI accepts: tool results answer the tool calls of the assistant message just before them,
    every call is answered before the next other message, and nothing but a user message comes first."""
    assert not messages or messages[0]["role"] not in ("assistant", "tool"), messages
    pending: set[str] = set()
    for message in messages:
        if message["role"] == "tool":
            assert message["tool_call_id"] in pending, messages
            pending.discard(message["tool_call_id"])
            continue
        assert not pending, messages
        if message["role"] == "assistant":
            pending = {c["id"] for c in message.get("tool_calls") or []}


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[StoredMessage], Budget]:
    stored = draw(stored_histories())
    return stored, draw(budgets(len(stored), sum(m.tokens for m in stored)))


@settings(max_examples=400, deadline=None)
@given(case=cases())
def test_trimming_keeps_the_longest_fitting_suffix_of_whole_turns(
    case: tuple[list[StoredMessage], Budget],
) -> None:
    stored, budget = case
    window = trim_history(stored, budget)
    # a suffix of the stored history, the longest made of whole turns that fits
    assert window == stored[len(stored) - len(window) :]
    assert window == reference_window(stored, budget)
    # never starts with anything but a user message
    assert not window or window[0].body["role"] == "user"
    # respects both limits
    if budget.max_messages is not None:
        assert len(window) <= budget.max_messages
    if budget.max_tokens is not None:
        assert sum(m.tokens for m in window) <= budget.max_tokens
    # what is sent is valid for OpenAI, system prompt first, and the new message last
    sent = compose_messages(SYSTEM, window, [{"role": "user", "content": "new"}])
    assert sent[0] == SYSTEM[0] and sent[-1]["content"] == "new"
    assert_valid_openai_sequence(sent[1:])
    assert unanswered_tool_results([m.body for m in window], []) == []


@settings(max_examples=300, deadline=None)
@given(case=cases(), data=st.data())
def test_any_suffix_of_candidates_gives_the_same_window(
    case: tuple[list[StoredMessage], Budget], data: st.DataObject
) -> None:
    """The indexed query may return any suffix that contains the window: select_window must not care."""
    stored, budget = case
    window = trim_history(stored, budget)
    cut = data.draw(st.integers(0, len(stored) - len(window)))
    token_count = sum(m.tokens for m in stored)
    assert select_window(stored[cut:], budget, len(stored), token_count) == window


def test_unanswered_tool_results_names_calls_missing_from_the_sent_history() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    asked = {"role": "assistant", "content": None, "tool_calls": [call]}
    result = {"role": "tool", "tool_call_id": "call_1", "content": "42"}
    assert unanswered_tool_results([{"role": "user", "content": "q"}, asked], [result]) == []
    assert unanswered_tool_results([], [result]) == ["call_1"]
    assert unanswered_tool_results([], [asked, result]) == []
