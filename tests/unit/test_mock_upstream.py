"""Unit tests of the mock upstream's pure parts: replies, usage, validation, faults and SSE events."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import pytest

from gateway.mock_upstream import MOCK_DATED_MODELS, mock_reply, mock_usage
from gateway.mock_upstream.errors import MockAPIError, MockConnectionReset
from gateway.mock_upstream.faults import Fault, find_fault
from gateway.mock_upstream.plan import Reply, completion_json, plan_reply
from gateway.mock_upstream.replies import mock_tool_call, response_model, split_even, split_words
from gateway.mock_upstream.resources import mock_embedding
from gateway.mock_upstream.stream import stream_events
from gateway.mock_upstream.validation import ChatRequest, validate_chat_request

TOOL: Any = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
CALL: Any = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}


def _body(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": messages, **extra}


def test_mock_reply_counts_all_messages_and_echoes_last_user() -> None:
    """The reply names the message count and the last user text."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": [{"type": "text", "text": "sec"}, {"type": "text", "text": "ond"}]},
    ]
    assert mock_reply(messages) == "[4 messages] second"
    assert mock_reply([{"role": "system", "content": "only"}]) == "[1 messages] "


def test_mock_reply_after_tool_message() -> None:
    """A trailing tool message is echoed as a tool result."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    assert mock_reply(messages) == "[3 messages] tool result: 42"


def test_mock_usage_formula() -> None:
    """Usage follows the documented deterministic formula."""
    messages = [{"role": "system", "content": "x" * 600}, {"role": "user", "content": "hello"}]
    prompt = (4 + len(json.dumps("x" * 600)) // 4) + (4 + len(json.dumps("hello")) // 4)
    usage = mock_usage(messages, "abcdefghij", "gpt-4o")
    assert usage == {
        "prompt_tokens": prompt,
        "completion_tokens": 2,
        "total_tokens": prompt + 2,
        "prompt_tokens_details": {"cached_tokens": 64 * (prompt // 128)},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert usage["prompt_tokens_details"]["cached_tokens"] == 64
    assert mock_usage(messages, "", "o3")["completion_tokens"] == 1
    assert mock_usage(messages, "", "o3")["completion_tokens_details"]["reasoning_tokens"] == 8


def test_dated_models() -> None:
    """Known aliases map to dated names; others are unchanged."""
    assert response_model("gpt-4o") == MOCK_DATED_MODELS["gpt-4o"] == "gpt-4o-2024-08-06"
    assert response_model("my-model") == "my-model"


def test_tool_call_is_deterministic() -> None:
    """The tool call id hashes the user text; the arguments carry it."""
    call = mock_tool_call("lookup", "héllo")
    assert call["id"] == "call_" + hashlib.sha256("héllo".encode()).hexdigest()[:12]
    assert json.loads(call["function"]["arguments"]) == {"input": "héllo"}


@pytest.mark.parametrize("text", ["[2 messages] a b c", "  lead and trail  ", "x", ""])
def test_split_helpers_preserve_text(text: str) -> None:
    """Splitting never loses or reorders characters."""
    assert "".join(split_words(text)) == text
    assert "".join(split_even(text)) == text
    assert len(split_words("[2 messages] hello")) == 3


def test_find_fault() -> None:
    """Only the last message, when from the user, can carry a fault marker."""
    assert find_fault([{"role": "user", "content": "x FAULT:slow:250 y"}]) == Fault("slow", 250)
    assert find_fault([{"role": "user", "content": "FAULT:stall-stream"}]) == Fault("stall-stream")
    assert (
        find_fault([{"role": "user", "content": "FAULT:500"}, {"role": "assistant", "content": "x"}]) is None
    )
    assert find_fault([{"role": "user", "content": "nothing"}]) is None


def test_valid_conversation_passes() -> None:
    """A full tool round trip with echoed response keys validates."""
    messages: list[dict[str, Any]] = [
        {"role": "developer", "content": [{"type": "text", "text": "d"}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]},
        {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "annotations": [],
            "audio": None,
            "function_call": None,
            "tool_calls": [CALL, {**CALL, "id": "call_2"}],
        },
        {"role": "tool", "tool_call_id": "call_2", "content": "b"},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "a"}]},
        {"role": "assistant", "refusal": "no"},
        {"role": "user", "content": "go"},
    ]
    body = _body(
        messages, stream=True, stream_options={"include_usage": True}, tools=[TOOL], tool_choice="auto"
    )
    chat = validate_chat_request(body)
    assert (chat.stream, chat.include_usage, chat.tool_choice) == (True, True, "auto")


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ([], "body", "invalid_type"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model", "missing_required_parameter"),
        (_body([{"role": "user", "content": "x"}], model=3), "model", "invalid_type"),
        (_body([{"role": "user", "content": "x"}], foo=1), None, None),
        (_body([]), "messages", "empty_array"),
        (_body([{"role": "user", "content": 5}]), "messages[0].content", "invalid_type"),
        (_body([{"role": "user", "content": [{"type": "text"}]}]), "messages[0].content[0].text",
         "missing_required_parameter"),
        (_body([{"role": "user", "content": "x", "extra": 1}]), "messages[0].extra", "unknown_parameter"),
        (_body([{"role": "assistant"}]), "messages[0].content", "missing_required_parameter"),
        (_body([{"role": "assistant", "tool_calls": [{**CALL, "type": "x"}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "r"}]),
         "messages[0].tool_calls[0].type", "invalid_value"),
        (_body([{"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f"}}]}]),
         "messages[0].tool_calls[0].function.arguments", "missing_required_parameter"),
        (_body([{"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "tool_call_id": "other",
                                                             "content": "r"}]), "messages[1].role", None),
        (_body([{"role": "assistant", "tool_calls": [CALL]}]), "messages[0].role", None),
        (_body([{"role": "user", "content": "x"}], stream=1), "stream", "invalid_type"),
        (_body([{"role": "user", "content": "x"}], stream=False, stream_options={}), "stream_options",
         "invalid_value"),
        (_body([{"role": "user", "content": "x"}], tools=[]), "tools", "empty_array"),
        (_body([{"role": "user", "content": "x"}], tools=[{"type": "function", "function": {}}]),
         "tools[0].function.name", "missing_required_parameter"),
        (_body([{"role": "user", "content": "x"}], tools=[{"type": "function", "function": {"name": "a b"}}]),
         "tools[0].function.name", "invalid_value"),
        (_body([{"role": "user", "content": "x"}], tool_choice="auto"), "tool_choice", None),
    ],
)  # fmt: skip
def test_validation_errors(body: object, param: str | None, code: str | None) -> None:
    """Each malformed body fails with OpenAI's param and code."""
    with pytest.raises(MockAPIError) as caught:
        validate_chat_request(body)
    assert caught.value.status_code == 400
    assert (caught.value.param, caught.value.code) == (param, code)


def test_unanswered_tool_calls_message_lists_ids() -> None:
    """The unanswered-calls error lists the missing ids."""
    messages: list[dict[str, Any]] = [
        {"role": "assistant", "tool_calls": [CALL, {**CALL, "id": "call_2"}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "r"},
        {"role": "user", "content": "x"},
    ]
    with pytest.raises(MockAPIError, match=r"did not have response messages: call_2$"):
        validate_chat_request(_body(messages))


def _request(text: str, **extra: Any) -> ChatRequest:
    return validate_chat_request(_body([{"role": "user", "content": text}], **extra))


def test_plan_reply_tool_choice_and_huge() -> None:
    """A named tool_choice picks that tool; huge forces a text reply; nousage drops usage."""
    other = {"type": "function", "function": {"name": "other"}}
    named = {"type": "function", "function": {"name": "other"}}
    reply = plan_reply(_request("x", tools=[TOOL, other], tool_choice=named), None)
    assert reply.tool_call is not None and reply.tool_call["function"]["name"] == "other"
    assert reply.finish_reason == "tool_calls"
    huge = plan_reply(_request("FAULT:huge:10", tools=[TOOL]), Fault("huge", 10))
    assert (huge.content, huge.tool_call) == ("x" * 10, None)
    body = json.loads(completion_json(plan_reply(_request("x"), Fault("nousage"))))
    assert "usage" not in body
    assert body["choices"][0]["message"]["content"] == "[1 messages] x"


async def _events(reply: Reply, include_usage: bool) -> list[str]:
    return [event.decode() async for event in stream_events(reply, include_usage)]


async def test_stream_events_with_usage() -> None:
    """Every chunk but the last carries usage null; the last has no choices and the usage."""
    events = await _events(plan_reply(_request("a b c"), None), include_usage=True)
    assert all(e.startswith("data: ") and e.endswith("\n\n") for e in events)
    assert events[-1] == "data: [DONE]\n\n"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == "[1 messages] a b c"


async def test_stream_event_faults() -> None:
    """cut stops after two content chunks, garbage sends an unparsable event, reset raises,
    cut-after-usage sends everything but [DONE]."""
    cut = await _events(plan_reply(_request("FAULT:cut"), Fault("cut")), include_usage=True)
    assert len(cut) == 3 and "[DONE]" not in "".join(cut)
    garbage = await _events(plan_reply(_request("FAULT:garbage"), Fault("garbage")), include_usage=False)
    assert garbage[1:] == ["data: {not json\n\n", "data: [DONE]\n\n"]
    with pytest.raises(MockConnectionReset):
        await _events(plan_reply(_request("FAULT:reset"), Fault("reset")), include_usage=False)
    after_usage = await _events(plan_reply(_request("FAULT:cut-after-usage"), Fault("cut-after-usage")), True)
    assert '"usage": {' in after_usage[-1] and "[DONE]" not in "".join(after_usage)


def test_mock_embedding_is_deterministic_unit_vector() -> None:
    """Embeddings are 8-dim, deterministic and unit length."""
    vector = mock_embedding("hello")
    assert vector == mock_embedding("hello") != mock_embedding("world")
    assert len(vector) == 8
    assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, abs_tol=1e-5)
