"""Property tests of the `stable` strategy against a brute-force reference, over whole conversations.

A conversation is replayed turn by turn: each request's window comes from `stable_window` (fed exactly
what the store would read: the indexed candidates and the anchor), its new start is kept, and the turn's
messages are appended. Checked on every request: never over a limit, identical to the brute-force
reference, the prefix byte-identical between cuts, cuts at or under the trim ratio, tool calls never split.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.history import Budget, StoredMessage, number_messages, trim_history
from gateway.window import WindowPlan, fits, reference_stable_window, stable_window, trim_budget
from tests.history_strategies import budgets, histories
from tests.unit.test_trimming import assert_valid_openai_sequence


def candidates_for(stored: list[StoredMessage], budget: Budget) -> list[StoredMessage]:
    """What the indexed window query reads: a suffix holding every whole turn that fits the budget."""
    window = trim_history(stored, budget)
    first = window[0].seq if window else len(stored)
    # the query may also read the part of an older turn that does not fit: add a little of it
    return [m for m in stored if m.seq >= max(first - 2, 0)]


def plan(stored: list[StoredMessage], budget: Budget, start: int, trim_to: float) -> WindowPlan:
    """`stable_window` fed the way the store feeds it."""
    anchor = next((m for m in stored if m.seq >= start and m.body["role"] == "user"), None)
    return stable_window(
        candidates_for(stored, budget),
        budget,
        start=start,
        anchor=anchor,
        message_count=len(stored),
        token_count=sum(m.tokens for m in stored),
        trim_to=trim_to,
    )


def tokens_of(messages: list[StoredMessage]) -> int:
    return sum(m.tokens for m in messages)


def turns_of(bodies: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split a history into the chunks a client sends one request at a time (each up to a user message)."""
    chunks: list[list[dict[str, Any]]] = [[]]
    for body in bodies:
        if body["role"] == "user" and chunks[-1]:
            chunks.append([])
        chunks[-1].append(body)
    return [c for c in chunks if c]


conversations = st.tuples(
    histories(),
    st.integers(1, 60),  # token seed
    st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]),
    st.data(),
)


@settings(max_examples=300, deadline=None)
@given(conversations)
def test_stable_window_over_a_whole_conversation(case: tuple[Any, int, float, st.DataObject]) -> None:
    bodies, seed, trim_to, data = case
    stored: list[StoredMessage] = []
    start = 0
    previous: list[dict[str, Any]] | None = None
    for chunk in turns_of(bodies):
        count, tokens = len(stored), tokens_of(stored)
        budget = data.draw(budgets(count, tokens))
        result = plan(stored, budget, start, trim_to)
        assert result == reference_stable_window(stored, budget, start, trim_to)
        window = result.history
        # never over a limit
        assert fits(budget, len(window), tokens_of(window))
        # whole turns: the window starts with a user message, and tool calls travel with their results
        if window:
            assert window[0].body["role"] == "user"
            assert window == stored[window[0].seq :]
        assert_valid_openai_sequence([m.body for m in window])
        if result.cut:
            # a cut lands at or under the trim ratio of each limit, and the start only moves forward
            assert fits(trim_budget(budget, trim_to), len(window), tokens_of(window))
            assert result.start > start
        else:
            assert result.start == start
            if previous is not None:
                # between cuts the replayed history starts where the last request's did: what was sent
                # before is a prefix of what is sent now (byte-identical upstream prefix)
                sent = [json.dumps(m.body, sort_keys=True) for m in window]
                assert sent[: len(previous)] == previous
        start = result.start
        # what this request sends of the conversation: its window, then its new messages (once the
        # window has begun; messages before the first user message are never replayed)
        previous = [json.dumps(m.body, sort_keys=True) for m in window]
        if window:
            previous += [json.dumps(m, sort_keys=True) for m in chunk]
        token_counts = [((seed * (len(stored) + i + 1)) % 37) + 3 for i in range(len(chunk))]
        last_user = next((m for m in reversed(stored) if m.body["role"] == "user"), None)
        stored += number_messages(
            chunk,
            token_counts,
            next_seq=len(stored),
            token_total=tokens_of(stored),
            last_user_seq=last_user.seq if last_user else 0,
            last_user_tokens=last_user.turn_start_tokens if last_user else 0,
        )


@settings(max_examples=200, deadline=None)
@given(histories(), st.data())
def test_a_window_that_fits_is_never_cut(bodies: list[dict[str, Any]], data: st.DataObject) -> None:
    stored = number_messages(
        bodies, [5] * len(bodies), next_seq=0, token_total=0, last_user_seq=0, last_user_tokens=0
    )
    start = data.draw(st.integers(0, len(stored)))
    unlimited = plan(stored, Budget(), start, 0.5)
    assert not unlimited.cut and unlimited.start == start
    first_user = next((m.seq for m in stored if m.seq >= start and m.body["role"] == "user"), None)
    assert unlimited.history == ([] if first_user is None else stored[first_user:])


def test_trim_budget_rounds_down() -> None:
    assert trim_budget(Budget(9, 4001), 0.5) == Budget(4, 2000)
    assert trim_budget(Budget(None, 10), 0.25) == Budget(None, 2)
    assert trim_budget(Budget(3, None), 1.0) == Budget(3, None)


def test_cut_example_by_hand() -> None:
    """Turns of 2 messages x 10 tokens, limit 40 tokens, trim 0.5: the window grows to 4 turns, then the
    fifth stored turn makes it 50 > 40, and the cut keeps the newest 2 turns (20 tokens <= 20)."""
    bodies = [
        m
        for n in range(5)
        for m in ({"role": "user", "content": f"u{n}"}, {"role": "assistant", "content": "a"})
    ]
    stored = number_messages(bodies, [5] * 10, next_seq=0, token_total=0, last_user_seq=0, last_user_tokens=0)
    grown = plan(stored[:8], Budget(max_tokens=40), 0, 0.5)
    assert not grown.cut and len(grown.history) == 8
    cut = plan(stored, Budget(max_tokens=40), 0, 0.5)
    assert cut.cut and cut.start == 6 and [m.seq for m in cut.history] == [6, 7, 8, 9]
    # a larger limit on one request takes effect on that request: no cut, the whole window is sent
    larger = plan(stored, Budget(max_tokens=50), 0, 0.5)
    assert not larger.cut and len(larger.history) == 10
