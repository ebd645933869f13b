"""Pure Responses translation: request -> chat body, completion -> response, chat chunks -> stream events.

Every object and event is validated against openai-python's own pydantic types (strict validation, not
the SDK's lenient construction), so what the gateway sends is what the SDK's types describe.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.responses import Response, ResponseItem, ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.errors import InvalidRequest
from gateway.items import message_items
from gateway.responses.events import ResponseEvents, replay_events
from gateway.responses.output import ResponseContext, completed_response, failed_response
from gateway.responses.request import input_messages, parse_request

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
ITEMS: TypeAdapter[Any] = TypeAdapter(ResponseItem)


def context(**body: Any) -> ResponseContext:
    """A response context for a request body (model and input filled in)."""
    request = parse_request({"model": "m", "input": "hi", **body})
    return ResponseContext("resp_abc", 1700000000, request, "conv_1")


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    """A chat.completion.chunk with one choice."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m-2024",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


USAGE_CHUNK = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "m-2024",
    "choices": [],
    "usage": {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 2},
    },
}


def test_a_string_input_is_one_user_message_with_string_content() -> None:
    assert input_messages("hello") == [{"role": "user", "content": "hello"}]


def test_items_become_chat_messages_and_calls_join_the_assistant_message() -> None:
    items = [
        {"role": "developer", "content": "Rules."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "look"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sure."}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
        {"type": "reasoning", "summary": []},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"}]},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "and this"},
                {"type": "input_image", "image_url": "https://example.test/a.png"},
            ],
        },
    ]
    assert input_messages(items) == [
        {"role": "developer", "content": "Rules."},
        {"role": "user", "content": "look"},
        {
            "role": "assistant",
            "content": "Sure.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "and this"},
                {"type": "image_url", "image_url": {"url": "https://example.test/a.png", "detail": "auto"}},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "function", "name": "f"}, {"type": "file_search"}]}, "tools[1].type"),
        ({"input": [{"type": "computer_call_output"}]}, "input[0].type"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments"),
        ({"max_output_tokens": "10"}, "max_output_tokens"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"model": 5}, "model"),
        ({"store": "yes"}, "store"),
    ],
)
def test_what_cannot_be_translated_names_its_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_request({"model": "m", "input": "hi", **body})
    assert raised.value.param == param


def test_tools_tool_choice_and_formats_map_to_chat_fields() -> None:
    request = parse_request(
        {
            "model": "m",
            "input": "hi",
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}],
            "tool_choice": {"type": "function", "name": "f"},
            "parallel_tool_calls": False,
            "text": {"format": {"type": "json_object"}, "verbosity": "low"},
            "stream": True,
        }
    )
    body = request.chat_body(request.messages)
    assert body["tools"] == [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": True}}
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert body["parallel_tool_calls"] is False
    assert body["response_format"] == {"type": "json_object"} and body["verbosity"] == "low"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_a_completion_becomes_a_response_the_sdk_types_validate() -> None:
    completion = {
        "model": "m-2024",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "Let me check.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a":1}'},
                        }
                    ],
                },
            }
        ],
        "usage": USAGE_CHUNK["usage"],
    }
    final = completed_response(context(), completion, 1700000001)
    parsed = Response.model_validate(final)
    assert parsed.output_text == "Let me check."
    assert [item.type for item in parsed.output] == ["message", "function_call"]
    assert parsed.usage is not None and parsed.usage.input_tokens_details.cached_tokens == 4
    assert parsed.usage.output_tokens_details.reasoning_tokens == 2
    assert parsed.conversation is not None and parsed.conversation.id == "conv_1"


def test_a_length_finish_is_incomplete_with_its_reason() -> None:
    completion = {
        "choices": [{"finish_reason": "length", "message": {"role": "assistant", "content": "cut"}}]
    }
    final = completed_response(context(), completion, 1)
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "max_output_tokens"}
    Response.model_validate(final)


def run_stream(chunks: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Feed chunks through the state machine and finish with the completion's final object."""
    ctx = context(stream=True)
    machine = ResponseEvents(ctx)
    events = machine.start()
    for piece in chunks:
        events += machine.feed(piece)
    final = completed_response(ctx, machine.assembler.completion(), 2)
    events += machine.finish(final)
    return events, final


def test_streamed_text_and_tool_calls_make_valid_events_that_agree_with_the_final_object() -> None:
    events, final = run_stream(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
            chunk({}, "tool_calls"),
            USAGE_CHUNK,
        ]
    )
    for event in events:
        EVENTS.validate_python(event)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    done = {e["output_index"]: e["item"] for e in events if e["type"] == "response.output_item.done"}
    assert [done[i]["id"] for i in sorted(done)] == [item["id"] for item in final["output"]]
    assert done[0]["content"][0]["text"] == "Hello" and done[1]["arguments"] == '{"a":1}'
    assert (
        events[-1]["type"] == "response.completed" and events[-1]["response"]["usage"]["total_tokens"] == 15
    )


def test_an_empty_answer_streams_one_empty_message() -> None:
    events, final = run_stream([chunk({"role": "assistant", "content": ""}), chunk({}, "stop")])
    kinds = [event["type"] for event in events]
    assert kinds.count("response.output_item.added") == 1 and kinds[-1] == "response.completed"
    assert final["output"][0]["content"][0]["text"] == ""


def test_a_refusal_streams_as_a_refusal_part() -> None:
    events, final = run_stream([chunk({"refusal": "No."}), chunk({}, "stop")])
    for event in events:
        EVENTS.validate_python(event)
    assert "response.refusal.delta" in [event["type"] for event in events]
    assert final["output"][0]["content"] == [{"type": "refusal", "refusal": "No."}]


def test_a_failure_mid_stream_is_response_failed_with_the_error() -> None:
    ctx = context(stream=True)
    machine = ResponseEvents(ctx)
    machine.start()
    machine.feed(chunk({"content": "partial"}))
    failed = failed_response(ctx, "upstream broke", output=machine.partial_output())
    (event,) = machine.fail(failed)
    parsed = EVENTS.validate_python(event)
    assert parsed.type == "response.failed" and parsed.response.error.message == "upstream broke"
    assert parsed.response.output[0].status == "incomplete"


def test_a_stored_response_replays_as_a_valid_event_stream() -> None:
    _, final = run_stream(
        [
            chunk({"content": "Hi"}),
            chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f"}}]}),
        ]
    )
    events = replay_events(final)
    for event in events:
        EVENTS.validate_python(event)
    assert events[-1]["response"] == final


def test_conversation_items_of_translated_messages_are_valid_response_items() -> None:
    messages = input_messages(
        [
            {"role": "user", "content": "q"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "r"},
        ]
    )
    for seq, message in enumerate(messages):
        for item in message_items(seq, message):
            ITEMS.validate_python(item)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    [
        "input",
        "tools",
        "tool_choice",
        "text",
        "reasoning",
        "conversation",
        "metadata",
        "max_output_tokens",
        "instructions",
        "previous_response_id",
        "store",
        "stream",
        "temperature",
        "background",
        "prompt",
    ]
)
ITEM = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "function_call", "function_call_output", "reasoning", "x"])},
    optional={
        "role": st.sampled_from(["user", "assistant", "system", "tool"]),
        "content": JSON,
        "call_id": JSON,
        "name": JSON,
        "arguments": JSON,
        "output": JSON,
    },
)


@given(
    fields=st.dictionaries(FIELDS, JSON | st.lists(ITEM, max_size=3), max_size=5),
)
@settings(max_examples=300, deadline=None)
def test_any_body_is_translated_or_refused_with_a_400(fields: dict[str, Any]) -> None:
    try:
        request = parse_request({"model": "m", **fields})
    except InvalidRequest as exc:
        assert exc.status_code == 400 and exc.param
        return
    body = request.chat_body(request.messages)
    completed_response(ResponseContext("resp_x", 1, request), {"choices": []}, 1)
    assert body["model"] == "m"
