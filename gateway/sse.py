"""Pure server-sent-events handling: split a byte stream into events and assemble the streamed reply."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class SseEvent:
    """One SSE event: its raw bytes (forwarded unchanged) and its decoded `data` payload."""

    raw: bytes
    data: str | None

    @property
    def is_done(self) -> bool:
        """True for the `data: [DONE]` terminator."""
        return self.data is not None and self.data.strip() == "[DONE]"

    def json(self) -> Any:
        """The decoded JSON payload, or None when it is absent or not JSON."""
        if self.data is None or self.is_done:
            return None
        try:
            return json.loads(self.data)
        except ValueError:
            return None


def parse_event(raw: bytes) -> SseEvent:
    """Decode one raw event (without its blank-line terminator handling)."""
    data_lines = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data_lines.append(value[1:] if value.startswith(b" ") else value)
    data = b"\n".join(data_lines).decode("utf-8", "replace") if data_lines else None
    return SseEvent(raw, data)


@dataclass
class SseSplitter:
    """Accumulates bytes and hands back each complete event as soon as its blank line arrives."""

    buffer: bytes = b""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Add bytes; return the events they complete."""
        data = self.buffer + chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        events = []
        start = 0
        while True:
            end = data.find(b"\n\n", start)
            if end < 0:
                break
            raw = data[start : end + 2]
            if raw.strip():
                events.append(parse_event(raw))
            start = end + 2
        self.buffer = data[start:]
        return events

    def leftover(self) -> bytes:
        """Bytes received after the last complete event (a stream cut mid-event)."""
        return self.buffer


@dataclass
class _ToolCall:
    id: str | None = None
    type: str = "function"
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class StreamAssembler:
    """Rebuilds choice 0's assistant message, the model and the usage from chunk objects."""

    model: str | None = None
    id: str | None = None
    created: int | None = None
    system_fingerprint: str | None = None
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tool_calls: dict[int, _ToolCall] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    saw_content: bool = False

    def observe(self, chunk: Any) -> None:
        """Take one decoded chunk into account."""
        if not isinstance(chunk, dict):
            return
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]  # kept even on an error event: a failed call's usage is recorded
        if isinstance(chunk.get("error"), dict):
            self.error = chunk["error"]
            return
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        if self.id is None and isinstance(chunk.get("id"), str):
            self.id = chunk["id"]
            self.created = chunk.get("created") if isinstance(chunk.get("created"), int) else None
            fingerprint = chunk.get("system_fingerprint")
            self.system_fingerprint = fingerprint if isinstance(fingerprint, str) else None
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._observe_choice(choice)

    def _observe_choice(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        if isinstance(delta.get("content"), str):
            self.content.append(delta["content"])
            self.saw_content = True
        if isinstance(delta.get("refusal"), str):
            self.refusal.append(delta["refusal"])
        for fragment in delta.get("tool_calls") or ():
            if isinstance(fragment, dict):
                self._observe_tool_call(fragment)
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]

    def _observe_tool_call(self, fragment: dict[str, Any]) -> None:
        call = self.tool_calls.setdefault(int(fragment.get("index", 0)), _ToolCall())
        if fragment.get("id"):
            call.id = fragment["id"]
        if fragment.get("type"):
            call.type = fragment["type"]
        function = fragment.get("function") or {}
        if function.get("name"):
            call.name += function["name"]
        if isinstance(function.get("arguments"), str):
            call.arguments.append(function["arguments"])

    def message(self) -> dict[str, Any]:
        """The assistant message as a non-streamed response would have carried it."""
        content = "".join(self.content) if self.saw_content else None
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if self.tool_calls:
            if content == "":
                message["content"] = None
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": call.type,
                    "function": {"name": call.name, "arguments": "".join(call.arguments)},
                }
                for _, call in sorted(self.tool_calls.items())
            ]
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        return message

    def completion(self) -> dict[str, Any]:
        """The whole reply as the `chat.completion` object a non-streamed request would have received."""
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "message": self.message(), "logprobs": None, "finish_reason": self.finish_reason}
            ],
            "usage": self.usage,
            "system_fingerprint": self.system_fingerprint,
        }


def data_only(event: SseEvent) -> bytes:
    """The event as plain `data:` lines, without `event:`/`id:` fields (an error is never `event: error`)."""
    lines = (event.data or "").split("\n")
    return b"".join(b"data: " + line.encode() + b"\n" for line in lines) + b"\n"


def is_usage_only(chunk: Any) -> bool:
    """True for the usage chunk OpenAI sends last when `stream_options.include_usage` is set."""
    return isinstance(chunk, dict) and chunk.get("choices") == [] and chunk.get("usage") is not None


def has_finish_reason(chunk: Any) -> bool:
    """True when any choice of the chunk carries a finish_reason."""
    if not isinstance(chunk, dict):
        return False
    return any(isinstance(c, dict) and c.get("finish_reason") for c in chunk.get("choices") or ())


def error_event(message: str, error_type: str, code: str | None) -> bytes:
    """A `data:` event carrying an OpenAI error object (the SDKs raise on it)."""
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def replay_events(completion: dict[str, Any], include_usage: bool) -> list[bytes]:
    """Render a stored chat.completion as a well-formed chunk stream ending in [DONE]."""
    base = {
        "id": completion.get("id"),
        "object": "chat.completion.chunk",
        "created": completion.get("created"),
        "model": completion.get("model"),
        "system_fingerprint": completion.get("system_fingerprint"),
    }
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        delta["tool_calls"] = [dict(call, index=i) for i, call in enumerate(message["tool_calls"])]
    if message.get("refusal") is not None:
        delta["refusal"] = message["refusal"]
    chunks: list[dict[str, Any]] = [
        {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]},
        {
            **base,
            "choices": [
                {"index": 0, "delta": {}, "logprobs": None, "finish_reason": choice.get("finish_reason")}
            ],
        },
    ]
    if include_usage and completion.get("usage") is not None:
        for chunk in chunks:
            chunk["usage"] = None
        chunks.append({**base, "choices": [], "usage": completion["usage"]})
    return [b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks] + [DONE]
