"""Server-sent events of a streamed mock chat completion, with the stream faults."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from gateway.mock_upstream.errors import MockConnectionReset
from gateway.mock_upstream.faults import STALL_SECONDS, huge_size, slow_seconds
from gateway.mock_upstream.plan import Reply
from gateway.mock_upstream.replies import split_even, split_words

DONE = b"data: [DONE]\n\n"
HUGE_PIECE_BYTES = 64 * 1024
_ROLE_DELTA: dict[str, Any] = {"role": "assistant", "content": ""}


class ChunkWriter:
    """Encodes `chat.completion.chunk` events of one reply from a precomputed JSON template."""

    def __init__(self, reply: Reply, usage_null: bool) -> None:
        head = {
            "id": reply.id,
            "object": "chat.completion.chunk",
            "created": reply.created,
            "model": reply.model,
            "system_fingerprint": "fp_mock",
        }
        self._start = "data: " + json.dumps(head)[:-1]
        self._head = self._start + ', "choices": [{"index": 0, "delta": '
        self._usage_tail = ', "usage": null}\n\n' if usage_null else "}\n\n"

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        """Return the event of a chunk with one choice carrying `delta`."""
        reason = json.dumps(finish_reason)
        tail = f', "logprobs": null, "finish_reason": {reason}}}]' + self._usage_tail
        return (self._head + json.dumps(delta) + tail).encode()

    def usage(self, usage: dict[str, Any]) -> bytes:
        """Return the final event carrying no choices and the usage."""
        return (self._start + ', "choices": [], "usage": ' + json.dumps(usage) + "}\n\n").encode()


def _body_events(reply: Reply, writer: ChunkWriter) -> Iterator[bytes]:
    """Yield the content (or tool call) events between the role chunk and the finish chunk."""
    if reply.tool_call is not None:
        call = reply.tool_call
        function = {"name": call["function"]["name"], "arguments": ""}
        yield writer.delta(
            {"tool_calls": [{"index": 0, "id": call["id"], "type": "function", "function": function}]}
        )
        for piece in split_even(call["function"]["arguments"]):
            yield writer.delta({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        return
    if reply.fault is not None and reply.fault.name == "huge":
        full, rest = divmod(huge_size(reply.fault), HUGE_PIECE_BYTES)
        event = writer.delta({"content": "x" * HUGE_PIECE_BYTES})
        for _ in range(full):
            yield event
        if rest:
            yield writer.delta({"content": "x" * rest})
        return
    for piece in split_words(reply.content or ""):
        yield writer.delta({"content": piece})


async def stream_events(reply: Reply, include_usage: bool) -> AsyncIterator[bytes]:
    """Yield the SSE events of `reply`, misbehaving as its fault says."""
    fault = reply.fault.name if reply.fault is not None else ""
    send_usage = include_usage and reply.usage is not None
    writer = ChunkWriter(reply, usage_null=send_usage)
    delay = slow_seconds(reply.fault)
    if delay:
        await asyncio.sleep(delay)
    yield writer.delta(_ROLE_DELTA)
    if fault == "garbage":
        yield b"data: {not json\n\n"
        yield DONE
        return
    for index, event in enumerate(_body_events(reply, writer)):
        if fault == "cut" and index == 2:
            return
        if fault == "reset" and index == 1:
            raise MockConnectionReset("injected by FAULT:reset")
        await asyncio.sleep(0)
        yield event
        if fault == "stall-stream":
            await asyncio.sleep(STALL_SECONDS)
    yield writer.delta({}, reply.finish_reason)
    if send_usage and reply.usage is not None:
        yield writer.usage(reply.usage)
    if fault == "cut-after-usage":
        return  # the whole reply and its usage, then the connection ends without [DONE]
    yield DONE
