"""The stream relay as a state machine: bytes in, bytes for the client out, an outcome at the end."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.relay import StreamFailed, StreamFailure, StreamFinished, StreamRelay
from gateway.sse import DONE


def event(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> bytes:
    delta = {} if content is None else {"content": content}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return event({"id": "c1", "model": "m-1", "choices": [choice], **extra})


USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
HELLO = chunk("Hel")
LO = chunk("lo")
FINISH = chunk(finish="stop")
USAGE_ONLY = event({"id": "c1", "model": "m-1", "choices": [], "usage": USAGE})
STREAM = HELLO + LO + FINISH + USAGE_ONLY + DONE


def relay(*, hide_usage: bool = False, max_bytes: int = 1 << 20) -> StreamRelay:
    return StreamRelay(max_bytes=max_bytes, hide_usage=hide_usage)


def feed_in_pieces(machine: StreamRelay, data: bytes, size: int) -> bytes:
    out = []
    for start in range(0, len(data), size):
        out.append(machine.feed(data[start : start + size]))
        if machine.done:
            break
    return b"".join(out)


@pytest.mark.parametrize("size", [1, 2, 7, 64, len(STREAM)])
def test_any_chunk_boundaries_give_the_same_bytes_and_reply(size: int) -> None:
    machine = relay()
    sent = feed_in_pieces(machine, STREAM, size)
    assert sent == HELLO + LO  # the finish and everything after it wait for the stored turn
    assert machine.done
    outcome = machine.outcome()
    assert isinstance(outcome, StreamFinished)
    assert outcome.held == FINISH + USAGE_ONLY
    assert outcome.message == {"role": "assistant", "content": "Hello"}
    assert outcome.completion["usage"] == USAGE
    assert outcome.completion["model"] == "m-1"
    assert outcome.completion["choices"][0]["finish_reason"] == "stop"
    assert outcome.generated == "Hello"


def test_an_event_is_sent_as_soon_as_its_blank_line_arrives() -> None:
    machine = relay()
    assert machine.feed(HELLO[:-1]) == b""
    assert machine.pending == len(HELLO) - 1
    assert machine.feed(HELLO[-1:]) == HELLO
    assert machine.pending == 0


def test_the_usage_chunk_the_gateway_added_is_hidden() -> None:
    machine = relay(hide_usage=True)
    assert machine.feed(STREAM) == HELLO + LO
    outcome = machine.outcome()
    assert isinstance(outcome, StreamFinished)
    assert outcome.held == FINISH  # the usage-only chunk is not held either
    assert outcome.completion["usage"] == USAGE  # but it is counted


def test_the_usage_chunk_the_client_asked_for_is_held_with_the_finish() -> None:
    machine = relay(hide_usage=False)
    machine.feed(STREAM)
    outcome = machine.outcome()
    assert isinstance(outcome, StreamFinished) and outcome.held == FINISH + USAGE_ONLY


def test_bytes_after_done_are_not_read() -> None:
    machine = relay()
    machine.feed(HELLO + DONE + LO)
    assert machine.done
    assert machine.feed(LO) == b""
    outcome = machine.outcome()
    assert isinstance(outcome, StreamFinished) and outcome.message["content"] == "Hel"


def test_a_stream_without_done_fails_with_502() -> None:
    machine = relay()
    assert machine.feed(HELLO + FINISH) == HELLO
    assert not machine.done
    outcome = machine.outcome()
    assert isinstance(outcome, StreamFailed)
    assert outcome.failure == StreamFailure(
        502, "The upstream stream ended before [DONE].", "upstream_error", "upstream_unreachable"
    )
    assert outcome.generated == "Hel"


def test_an_upstream_error_event_goes_out_as_plain_data_and_drops_the_held_finish() -> None:
    error = {"error": {"message": "overloaded", "type": "server_error"}, "usage": USAGE}
    raw = b"event: error\n" + event(error)
    machine = relay()
    sent = machine.feed(HELLO + FINISH + raw + LO)
    assert sent == HELLO + event(error)  # `data:` only, never `event: error`; the held finish is gone
    assert machine.done
    outcome = machine.outcome()
    assert isinstance(outcome, StreamFailed)
    assert outcome.failure == StreamFailure(502, "overloaded")
    assert outcome.reported == {"usage": USAGE, "model": "m-1"}  # a failed call's usage is recorded
    assert json.loads(outcome.failure.event()[6:]) == {
        "error": {"message": "overloaded", "type": "server_error", "param": None, "code": None}
    }


def test_an_event_that_is_not_json_fails_and_sends_nothing_more_of_its_chunk() -> None:
    machine = relay()
    assert machine.feed(HELLO) == HELLO
    assert machine.feed(LO + b"data: {nope\n\n") == b""
    assert machine.done
    outcome = machine.outcome()
    assert isinstance(outcome, StreamFailed)
    assert outcome.failure.status == 502
    assert outcome.failure.code == "upstream_unreachable"
    assert outcome.failure.message == "The upstream sent a stream event that is not JSON."


def test_a_malformed_chunk_fails() -> None:
    machine = relay()
    assert machine.feed(event({"choices": "no"})) == b""
    outcome = machine.outcome()
    assert isinstance(outcome, StreamFailed)
    assert outcome.failure.message == "The upstream sent a malformed stream chunk: 'choices' is not an array."


def test_the_size_limit_counts_every_byte_and_sends_nothing_of_the_chunk_past_it() -> None:
    machine = relay(max_bytes=len(HELLO) + 1)
    assert machine.feed(HELLO) == HELLO
    assert machine.feed(LO) == b""
    assert machine.done
    outcome = machine.outcome()
    assert isinstance(outcome, StreamFailed)
    assert outcome.failure.message == (
        f"The upstream stream exceeded the size limit of {len(HELLO) + 1} bytes (GATEWAY_MAX_RESPONSE_BYTES)."
    )
    assert outcome.failure.status == 502


def test_a_failure_from_outside_wins_over_a_finished_stream() -> None:
    machine = relay()
    machine.feed(STREAM)
    machine.fail(StreamFailure(499, "client disconnected"))
    outcome = machine.outcome()
    assert isinstance(outcome, StreamFailed)
    assert outcome.failure == StreamFailure(499, "client disconnected")
    assert outcome.reported == {"usage": USAGE, "model": "m-1"}


def test_comments_and_crlf_pass_through() -> None:
    machine = relay()
    sent = machine.feed(b": keep-alive\r\n\r\n" + HELLO.replace(b"\n", b"\r\n"))
    assert sent == b": keep-alive\n\n" + HELLO
