"""Pure server-sent-events handling: split a byte stream into events and assemble the streamed reply."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

DONE = b"data: [DONE]\n\n"


class MalformedChunk(ValueError):
    """A stream chunk whose fields the gateway reads have types no OpenAI chunk has."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


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
            return json.loads(self.data, parse_constant=_reject_constant)  # NaN and Infinity are not JSON
        except (ValueError, RecursionError):
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
        """Take one decoded chunk into account; MalformedChunk when a field it reads has the wrong type."""
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
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise MalformedChunk("'choices' is not an array")
        for choice in choices:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._observe_choice(choice)

    def _observe_choice(self, choice: dict[str, Any]) -> None:
        delta = _object(choice.get("delta"), "delta")
        content = _text(delta.get("content"), "delta.content")
        if content is not None:
            self.content.append(content)
            self.saw_content = True
        refusal = _text(delta.get("refusal"), "delta.refusal")
        if refusal is not None:
            self.refusal.append(refusal)
        fragments = delta.get("tool_calls") or []
        if not isinstance(fragments, list):
            raise MalformedChunk("'delta.tool_calls' is not an array")
        for fragment in fragments:
            self._observe_tool_call(_object(fragment, "delta.tool_calls[]"))
        finish = _text(choice.get("finish_reason"), "finish_reason")
        if finish:
            self.finish_reason = finish

    def _observe_tool_call(self, fragment: dict[str, Any]) -> None:
        index = fragment.get("index", 0)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 1024:
            raise MalformedChunk("a tool call's 'index' is not a small whole number")
        call = self.tool_calls.setdefault(index, _ToolCall())
        if fragment.get("id"):
            call.id = _text(fragment["id"], "tool_calls[].id")
        if fragment.get("type"):
            call.type = _text(fragment["type"], "tool_calls[].type") or "function"
        function = _object(fragment.get("function"), "tool_calls[].function")
        name = _text(function.get("name"), "function.name")
        if name:
            call.name += name
        arguments = _text(function.get("arguments"), "function.arguments")
        if arguments is not None:
            call.arguments.append(arguments)

    def generated_text(self) -> str:
        """Every text the reply generated so far (content, refusal, tool names and arguments), to count it."""
        parts = [*self.content, *self.refusal]
        for call in self.tool_calls.values():
            parts.append(call.name)
            parts.extend(call.arguments)
        return "".join(parts)

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


def _object(value: Any, name: str) -> dict[str, Any]:
    """An optional object field: absent or null is empty, anything but an object is malformed."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedChunk(f"'{name}' is not an object")
    return value


def _text(value: Any, name: str) -> str | None:
    """An optional string field: anything but a string or null is malformed."""
    if value is None or isinstance(value, str):
        return value
    raise MalformedChunk(f"'{name}' is not a string")


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


@dataclass
class UsageMeter:
    """What a proxied stream (completions, Responses, ...) reports: its model and usage, and its text.

    Reads `usage` at the top level (completions and chat chunks) or inside `response` (the Responses
    API's `response.completed` event), and collects generated text from completion choices (`text`,
    `delta.content`) and from `*.delta` events, to estimate the completion when no usage comes.
    """

    model: str | None = None
    usage: dict[str, Any] | None = None
    text: list[str] = field(default_factory=list)

    def observe(self, chunk: Any) -> None:
        """Take one decoded event payload into account (anything not shaped as expected is ignored)."""
        if not isinstance(chunk, dict):
            return
        inner = chunk.get("response")
        for source in (chunk, inner if isinstance(inner, dict) else {}):
            if isinstance(source.get("usage"), dict):
                self.usage = source["usage"]
            if isinstance(source.get("model"), str):
                self.model = source["model"]
        kind = chunk.get("type")
        if isinstance(kind, str) and kind.endswith(".delta") and isinstance(chunk.get("delta"), str):
            self.text.append(chunk["delta"])
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            for piece in (choice.get("text"), delta.get("content") if isinstance(delta, dict) else None):
                if isinstance(piece, str):
                    self.text.append(piece)

    def fields(self) -> dict[str, Any]:
        """The stream's reply fields as a JSON body would carry them (`model`, `usage`)."""
        return {"model": self.model, "usage": self.usage}
