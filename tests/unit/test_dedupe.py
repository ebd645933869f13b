"""Dedupe compares meaning, not bytes; the overlap search agrees with a brute-force reference."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dedupe import holds_turn, overlap_search_limit, same_message, stored_run_length
from gateway.history import history_digest, new_messages

Message = dict[str, Any]


def user(text: str) -> Message:
    return {"role": "user", "content": text}


def assistant(text: str | None, **extra: Any) -> Message:
    return {"role": "assistant", "content": text, **extra}


def call(arguments: str, call_id: str = "call_1", **extra: Any) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": "weather", "arguments": arguments},
        **extra,
    }


SPACED = '{"location": "Paris", "unit": "celsius"}'
COMPACT = '{"location":"Paris","unit":"celsius"}'


def test_arguments_compare_as_json_values_key_order_and_whitespace_ignored() -> None:
    stored = assistant(None, tool_calls=[call(SPACED)])
    assert same_message(stored, assistant(None, tool_calls=[call(COMPACT)]))
    assert same_message(stored, assistant(None, tool_calls=[call('{"unit":"celsius","location":"Paris"}')]))
    assert same_message(stored, assistant(None, tool_calls=[call(json.dumps(json.loads(SPACED), indent=2))]))
    assert not same_message(
        stored, assistant(None, tool_calls=[call('{"location":"Rome","unit":"celsius"}')])
    )
    # numbers as JavaScript writes them back; but a boolean is not a number
    assert same_message(
        assistant(None, tool_calls=[call('{"n": 1.0}')]), {**stored, "tool_calls": [call('{"n":1}')]}
    )
    assert not same_message(
        assistant(None, tool_calls=[call('{"n": 1}')]), {**stored, "tool_calls": [call('{"n":true}')]}
    )
    # arguments that do not parse compare as strings
    assert same_message(
        assistant(None, tool_calls=[call("{oops")]), assistant(None, tool_calls=[call("{oops")])
    )
    assert not same_message(
        assistant(None, tool_calls=[call("{oops")]), assistant(None, tool_calls=[call("{oops ")])
    )
    assert not same_message(
        assistant(None, tool_calls=[call('"1"')]), assistant(None, tool_calls=[call("1")])
    )


def test_text_part_lists_equal_their_joined_string() -> None:
    parts = [
        {"type": "text", "text": "Hello, "},
        {"type": "text", "text": "world", "cache_control": {"type": "ephemeral"}},
    ]
    assert same_message(user("Hello, world"), {"role": "user", "content": parts})
    assert same_message(
        {"role": "user", "content": [{"type": "text", "text": "Hello, world"}]},
        {"role": "user", "content": parts},
    )
    assert not same_message(user("Hello,world"), {"role": "user", "content": parts})
    image = {"type": "image_url", "image_url": {"url": "data:,"}}
    assert not same_message(user("Hello, world"), {"role": "user", "content": [*parts, image]})
    tool = {"role": "tool", "tool_call_id": "c", "content": "42"}
    assert same_message(tool, {**tool, "content": [{"type": "text", "text": "42"}]})


def test_missing_null_and_empty_content_on_tool_calls() -> None:
    stored = assistant(None, tool_calls=[call(SPACED)])
    no_content = {"role": "assistant", "tool_calls": [call(COMPACT)]}
    empty = assistant("", tool_calls=[call(COMPACT)])
    empty_parts = assistant([], tool_calls=[call(COMPACT)])
    assert (
        same_message(stored, no_content) and same_message(stored, empty) and same_message(stored, empty_parts)
    )
    assert not same_message(assistant(""), assistant(None))  # only on a message with tool calls
    assert same_message(user("x"), {"role": "user", "content": "x", "name": None})
    assert not same_message(user("x"), {"role": "user", "content": "x", "name": "bob"})


def test_missing_tool_call_type_and_extra_fields() -> None:
    stored = assistant(None, tool_calls=[call(SPACED)])
    untyped = {"id": "call_1", "function": {"name": "weather", "arguments": COMPACT}}
    resent = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [{**untyped, "index": 0}]}
    assert same_message(stored, resent)
    assert not same_message(stored, assistant(None, tool_calls=[call(SPACED, call_id="call_2")]))
    other_name = {**call(SPACED), "function": {"name": "other", "arguments": SPACED}}
    assert not same_message(stored, assistant(None, tool_calls=[other_name]))


def test_the_history_digest_follows_the_same_rules() -> None:
    stored = [user("weather?"), assistant(None, tool_calls=[call(SPACED)])]
    digest = history_digest(stored)
    resent = [
        {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
        {"role": "assistant", "tool_calls": [call(COMPACT)]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    assert new_messages(resent, 2, digest) == resent[2:]


def test_holds_turn() -> None:
    assert holds_turn([user("a"), assistant("b")])
    assert holds_turn([assistant("x"), user("a"), assistant(None, tool_calls=[call("{}")]), assistant("b")])
    assert not holds_turn([assistant("b")])
    assert not holds_turn([assistant("b"), user("a")])


def test_overlap_cases_by_hand() -> None:
    stored = [user("a"), assistant("A"), user("b"), assistant("B"), user("c"), assistant("C")]
    for length in range(1, 6):  # suffix windows of every length: deduped once they hold a whole turn
        window = stored[-length:]
        expected = length if length >= 2 else 0
        assert stored_run_length([*window, user("d")], stored, 6) == expected
    assert stored_run_length([*stored, user("d")], stored, 6) == 6
    assert stored_run_length([assistant("C"), user("d")], stored, 6) == 0  # a lone message
    assert stored_run_length([user("c"), assistant("C")], stored, 6) == 2  # nothing new
    assert stored_run_length([user("c")], stored, 6) == 0  # the user repeats the question
    assert stored_run_length([user("b"), assistant("B"), user("d")], stored, 6) == 0  # not at the end
    assert (
        overlap_search_limit(1, 6) == 0
        and overlap_search_limit(3, 6) == 3
        and overlap_search_limit(9, 6) == 6
    )
    assert overlap_search_limit(1, 1) == 1 and overlap_search_limit(5, 0) == 0


# --- property test against a brute-force reference ------------------------------------------------------


def reference_same(first: Message, second: Message) -> bool:
    """The issue's equality rules, written pairwise and independently of gateway.dedupe."""

    def content(message: Message) -> Any:
        value = message.get("content")
        if isinstance(value, list) and all(p.get("type") == "text" for p in value):
            value = "".join(p["text"] for p in value)
        if message.get("tool_calls") and value == "":
            value = None
        return value

    def arguments_equal(a: str, b: str) -> bool:
        try:
            return json.dumps(json.loads(a), sort_keys=True) == json.dumps(json.loads(b), sort_keys=True)
        except ValueError:
            return a == b

    def calls_equal(a: Any, b: Any) -> bool:
        a, b = a or [], b or []
        return len(a) == len(b) and all(
            x["id"] == y["id"]
            and (x.get("type") or "function") == (y.get("type") or "function")
            and x["function"]["name"] == y["function"]["name"]
            and arguments_equal(x["function"]["arguments"], y["function"]["arguments"])
            for x, y in zip(a, b, strict=True)
        )

    return (
        first.get("role") == second.get("role")
        and first.get("name") == second.get("name")
        and first.get("tool_call_id") == second.get("tool_call_id")
        and content(first) == content(second)
        and calls_equal(first.get("tool_calls"), second.get("tool_calls"))
    )


def reference_run_length(request: list[Message], stored: list[Message]) -> int:
    """Brute force over every length: the longest leading run equal to a stored suffix that qualifies."""
    best = 0
    for length in range(1, min(len(request), len(stored)) + 1):
        run = request[:length]
        if not all(reference_same(a, b) for a, b in zip(run, stored[-length:], strict=True)):
            continue
        whole_turn = any(
            run[i]["role"] == "user" and run[j]["role"] == "assistant"
            for i in range(length)
            for j in range(i + 1, length)
        )
        if length == len(stored) or whole_turn:
            best = length
    return best


def shapes(message: Message) -> st.SearchStrategy[Message]:
    """The same message as different clients resend it."""
    variants = [message]
    text = message.get("content")
    if isinstance(text, str):
        variants.append({**message, "content": [{"type": "text", "text": text}]})
        variants.append(
            {**message, "content": [{"type": "text", "text": text[:1]}, {"type": "text", "text": text[1:]}]}
        )
    if message.get("tool_calls"):
        compact = [
            {
                **c,
                "function": {
                    **c["function"],
                    "arguments": json.dumps(json.loads(c["function"]["arguments"]), separators=(",", ":")),
                },
            }
            for c in message["tool_calls"]
        ]
        variants.append({"role": "assistant", "tool_calls": compact})
        variants.append(
            {
                **message,
                "content": "",
                "tool_calls": [{k: v for k, v in c.items() if k != "type"} for c in compact],
            }
        )
    return st.sampled_from(variants)


BASE = st.sampled_from(
    [
        user("a"),
        user("b"),
        assistant("A"),
        assistant("B"),
        assistant(None, tool_calls=[call('{"x": 1, "y": [1, 2]}', "c1")]),
        assistant(None, tool_calls=[call('{"x": 2}', "c2")]),
        {"role": "tool", "tool_call_id": "c1", "content": "r"},
    ]
)


CALL_C1 = assistant(None, tool_calls=[call('{"x": 1, "y": [1, 2]}', "c1")])
RESULT_C1 = {"role": "tool", "tool_call_id": "c1", "content": "r"}
# stored histories are mostly whole turns (as the gateway stores them), sometimes odd single messages
CHUNKS = st.sampled_from(
    [
        [user("a"), assistant("A")],
        [user("b"), assistant("B")],
        [user("a"), CALL_C1, RESULT_C1, assistant("A")],
        [user("b"), CALL_C1],
        [assistant("A")],
        [user("a")],
    ]
)
HISTORIES = st.lists(CHUNKS, min_size=1, max_size=4).map(lambda chunks: [m for c in chunks for m in c])


@settings(max_examples=400, deadline=None)
@given(stored=HISTORIES, data=st.data())
def test_overlap_agrees_with_the_brute_force_reference(stored: list[Message], data: st.DataObject) -> None:
    # a request that often resends a suffix of the stored history (in other shapes), then new messages
    start = data.draw(st.integers(0, len(stored)))
    resent = [data.draw(shapes(m)) for m in stored[start:]]
    extra = data.draw(st.lists(BASE, max_size=3))
    request = data.draw(st.sampled_from([resent + extra, extra + resent, resent, extra])) or [user("z")]
    limit = overlap_search_limit(len(request), len(stored))
    expected = reference_run_length(request, stored)
    got = stored_run_length(request, stored[len(stored) - limit :] if limit else [], len(stored))
    assert got == expected
    # the full-history digest path finds exactly the whole-history runs
    if expected == len(stored):
        assert new_messages(request, len(stored), history_digest(stored)) == request[expected:]


def test_arguments_nested_past_the_recursion_limit_compare_as_strings() -> None:
    def nested(depth: int, tail: str = "") -> Message:
        return assistant(None, tool_calls=[call("[" * depth + "]" * depth + tail)])

    assert same_message(nested(50), nested(50, " "))  # parsed: whitespace ignored
    assert same_message(nested(100_000), nested(100_000))  # too deep to parse: compared as strings
    assert not same_message(nested(100_000), nested(100_000, " "))
