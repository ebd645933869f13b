"""Unit tests of SSE splitting and stream assembly."""

from __future__ import annotations

import json
from typing import Any

from gateway.sse import (
    SseSplitter,
    StreamAssembler,
    data_only,
    has_finish_reason,
    is_usage_only,
    replay_events,
)


def event(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def test_splitter_yields_events_as_soon_as_they_complete() -> None:
    splitter = SseSplitter()
    data = event({"a": 1}) + event({"b": 2}) + b"data: [DONE]\n\n"
    events = []
    for index in range(0, len(data), 7):
        events += splitter.feed(data[index : index + 7])
    assert [e.json() for e in events[:2]] == [{"a": 1}, {"b": 2}]
    assert events[2].is_done
    assert splitter.leftover() == b""
    crlf = SseSplitter().feed(b'data: {"x": 1}\r\n\r\n')
    assert crlf[0].json() == {"x": 1}


def test_splitter_keeps_a_cut_event_as_leftover() -> None:
    splitter = SseSplitter()
    assert splitter.feed(b'data: {"partial"') == []
    assert splitter.leftover() == b'data: {"partial"'


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"model": "m-1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_assembler_rebuilds_content_and_tool_calls() -> None:
    assembler = StreamAssembler()
    for piece in (
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
    ):
        assembler.observe(piece)
    assert assembler.message() == {"role": "assistant", "content": "Hello"}
    tools = StreamAssembler()
    tools.observe(
        chunk(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": ""},
                    }
                ],
            }
        )
    )
    tools.observe(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}))
    tools.observe(chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}))
    tools.observe(chunk({}, finish="tool_calls"))
    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    tools.observe(usage)
    assert tools.message() == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
        ],
    }
    assert tools.finish_reason == "tool_calls" and tools.usage == usage["usage"] and tools.model == "m-1"
    assert is_usage_only(usage) and not is_usage_only(chunk({}))
    assert has_finish_reason(chunk({}, "stop")) and not has_finish_reason(chunk({"content": "x"}))


def test_assembler_records_stream_errors() -> None:
    assembler = StreamAssembler()
    assembler.observe({"error": {"message": "boom"}})
    assert assembler.error == {"message": "boom"}


def test_assembler_keeps_usage_sent_with_an_error() -> None:
    assembler = StreamAssembler()
    assembler.observe({"error": {"message": "overloaded"}, "usage": {"prompt_tokens": 12}})
    assert assembler.error == {"message": "overloaded"} and assembler.usage == {"prompt_tokens": 12}


def test_replay_events_form_a_well_formed_stream() -> None:
    completion = {
        "id": "c1",
        "created": 1,
        "model": "m",
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    }
    events = replay_events(completion, include_usage=True)
    assert events[-1] == b"data: [DONE]\n\n"
    assembler = StreamAssembler()
    for raw in events[:-1]:
        assembler.observe(json.loads(raw[6:]))
    assert assembler.message() == {"role": "assistant", "content": "hi"}
    assert assembler.usage == completion["usage"]


def test_data_only_drops_the_event_field_of_an_error_event() -> None:
    (parsed,) = SseSplitter().feed(b'event: error\nid: 7\ndata: {"error": {"message": "bad"}}\n\n')
    assert data_only(parsed) == b'data: {"error": {"message": "bad"}}\n\n'
    (multi,) = SseSplitter().feed(b"data: {\ndata: }\n\n")
    assert data_only(multi) == b"data: {\ndata: }\n\n"


def test_assembler_completion_is_a_whole_chat_completion() -> None:
    assembler = StreamAssembler()
    head = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 7, "system_fingerprint": "fp"}
    for payload in (
        {**head, **chunk({"role": "assistant", "content": "Hi"})},
        {**head, **chunk({}, "stop")},
        {**head, "model": "m-1", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
    ):
        assembler.observe(payload)
    completion = assembler.completion()
    assert completion["id"] == "chatcmpl-9" and completion["created"] == 7
    assert completion["object"] == "chat.completion" and completion["system_fingerprint"] == "fp"
    assert completion["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert completion["usage"] == {"prompt_tokens": 1, "completion_tokens": 1}
    replayed = b"".join(replay_events(completion, include_usage=True))
    assert b'"id": "chatcmpl-9"' in replayed and replayed.endswith(b"data: [DONE]\n\n")
