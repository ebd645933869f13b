"""Pure pieces of charging a call: prompt and completion estimates, stream metering, bounded inflation."""

from __future__ import annotations

import gzip
import zlib

import pytest

from gateway.capture import InflatedTooLarge, Inflater
from gateway.estimates import body_prompt_tokens, chat_prompt_tokens, completion_allowance, estimated_usage
from gateway.pricing import MAX_COUNT, Usage, parse_usage
from gateway.sse import MalformedChunk, StreamAssembler, UsageMeter


def test_chat_prompt_tokens_follow_the_cookbook() -> None:
    messages = [{"role": "user", "content": "hello"}]
    assert chat_prompt_tokens(messages, "gpt-4o") == 3 + 1 + 1 + 3  # overhead, role, content, priming


def test_body_prompt_tokens_read_every_prompt_field() -> None:
    assert body_prompt_tokens({"input": "abcdefgh"}, "local") == 2
    assert body_prompt_tokens({"prompt": ["abcd", "efgh"], "instructions": "abcd"}, "local") == 3
    deep: object = "abcd"
    for _ in range(500):
        deep = [deep]
    assert body_prompt_tokens({"input": deep}, "local") == 0  # beyond the depth bound: not walked


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, 4096),
        ({"max_tokens": 20}, 20),
        ({"max_completion_tokens": 7, "max_tokens": 20}, 7),
        ({"max_output_tokens": 9}, 9),
        ({"max_tokens": True}, 4096),
        ({"max_tokens": -1}, 4096),
        ({"max_tokens": 2**80}, MAX_COUNT),
    ],
)
def test_the_completion_allowance(body: dict[str, object], expected: int) -> None:
    assert completion_allowance(body, 4096) == expected


def test_an_estimate_counts_the_generated_text() -> None:
    assert estimated_usage(10, "abcdefgh", "local") == Usage(10, 2)
    assert estimated_usage(10, "", "local") == Usage(10, 0)


def test_usage_beyond_the_columns_is_no_usage() -> None:
    assert parse_usage({"usage": {"prompt_tokens": MAX_COUNT, "completion_tokens": 1}}) == Usage(MAX_COUNT, 1)
    assert parse_usage({"usage": {"prompt_tokens": MAX_COUNT + 1, "completion_tokens": 1}}) is None
    assert parse_usage({"usage": {"input_tokens": 1, "output_tokens": 2**64}}) is None


def test_the_meter_reads_chat_completions_and_responses_streams() -> None:
    meter = UsageMeter()
    meter.observe({"choices": [{"index": 0, "text": "ab"}], "model": "m1"})
    meter.observe({"choices": [{"index": 0, "delta": {"content": "cd"}}]})
    meter.observe({"type": "response.output_text.delta", "delta": "ef"})
    meter.observe({"type": "response.completed", "response": {"model": "m2", "usage": {"input_tokens": 3}}})
    meter.observe(["not", "an", "object"])
    assert "".join(meter.text) == "abcdef"
    assert meter.fields() == {"model": "m2", "usage": {"input_tokens": 3}}


@pytest.mark.parametrize(
    "chunk",
    [
        {"choices": {"index": 0}},
        {"choices": [{"index": 0, "delta": []}]},
        {"choices": [{"index": 0, "delta": {"content": 1}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": "x"}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": "f"}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 10**9}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": "x"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": 3}]},
    ],
)
def test_the_assembler_refuses_chunks_of_the_wrong_shape(chunk: dict[str, object]) -> None:
    with pytest.raises(MalformedChunk):
        StreamAssembler().observe(chunk)


def test_the_inflater_stops_at_its_limit() -> None:
    bomb = gzip.compress(b"\0" * (10 * 1024 * 1024))
    inflater = Inflater("gzip", 1024 * 1024)
    with pytest.raises(InflatedTooLarge):
        for start in range(0, len(bomb), 1000):
            inflater.feed(bomb[start : start + 1000])
    assert inflater.size <= 1024 * 1024 + 256 * 1024


def test_the_inflater_inflates_within_its_limit() -> None:
    data = b"hello " * 100_000
    packed = zlib.compress(data)
    inflater = Inflater("deflate", len(data))
    assert b"".join(inflater.feed(packed[i : i + 100]) for i in range(0, len(packed), 100)) == data
