"""Hypothesis strategies for stored histories (with tool calls) and history budgets, shared by tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from gateway.history import Budget, StoredMessage, number_messages

Message = dict[str, Any]


def _user(draw: st.DrawFn) -> list[Message]:
    return [{"role": "user", "content": draw(st.sampled_from(["hi", "weather?", "and now?", "ok"]))}]


def _answer(draw: st.DrawFn) -> list[Message]:
    return [{"role": "assistant", "content": draw(st.sampled_from(["sure", "it is sunny", "done"]))}]


def _tool_round(draw: st.DrawFn, counter: list[int]) -> list[Message]:
    """An assistant message with 1-3 tool calls, followed by their results (in any order)."""
    ids = []
    for _ in range(draw(st.integers(1, 3))):
        counter[0] += 1
        ids.append(f"call_{counter[0]}")
    calls = [{"id": i, "type": "function", "function": {"name": "f", "arguments": "{}"}} for i in ids]
    results = [{"role": "tool", "tool_call_id": i, "content": "42"} for i in draw(st.permutations(ids))]
    return [{"role": "assistant", "content": None, "tool_calls": calls}, *results]


@st.composite
def histories(draw: st.DrawFn) -> list[Message]:
    """A valid stored history: optional assistant messages before any user one, then turns of user messages,
    tool rounds, answers and the odd mid-conversation system message."""
    counter = [0]
    messages: list[Message] = []
    for _ in range(draw(st.integers(0, 2))):
        messages += _answer(draw)
    for _ in range(draw(st.integers(0, 8))):
        messages += _user(draw)
        for _ in range(draw(st.integers(0, 3))):
            step = draw(st.sampled_from(["tool", "answer", "system", "user"]))
            if step == "tool":
                messages += _tool_round(draw, counter)
            elif step == "answer":
                messages += _answer(draw)
            elif step == "system":
                messages.append({"role": "system", "content": "be brief"})
            else:
                messages += _user(draw)
    return messages


@st.composite
def stored_histories(draw: st.DrawFn) -> list[StoredMessage]:
    """A valid history numbered as the store numbers it, with random token counts."""
    bodies = draw(histories())
    tokens = draw(st.lists(st.integers(1, 60), min_size=len(bodies), max_size=len(bodies)))
    return number_messages(bodies, tokens, next_seq=0, token_total=0, last_user_seq=0, last_user_tokens=0)


def budgets(message_count: int, token_count: int) -> st.SearchStrategy[Budget]:
    """Any budget, with limits around the history's own size (None = unlimited)."""
    messages = st.none() | st.integers(0, message_count + 2)
    tokens = st.none() | st.integers(0, token_count + 10)
    return st.builds(Budget, max_messages=messages, max_tokens=tokens)
