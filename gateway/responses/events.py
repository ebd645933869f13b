"""Pure translation of a chat-completions chunk stream into Responses-API stream events (sans-I/O).

Feed it the decoded chunks; it returns the semantic events to send, each with the next
`sequence_number`: `response.created` and `response.in_progress` first, then an output item per
message or function call (`output_item.added`, content parts and text or argument deltas,
`output_item.done`), and at the end `response.completed` / `response.incomplete` carrying the final
object, or `response.failed` carrying the error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gateway.responses.output import (
    ResponseContext,
    as_dict,
    call_item,
    message_item,
    response_object,
    text_part,
)
from gateway.sse import StreamAssembler

Event = dict[str, Any]


def encode(event: Event) -> bytes:
    """One event as SSE bytes: its type as the `event:` field, the object as `data:`."""
    data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


@dataclass
class _Part:
    kind: str  # "output_text" or "refusal"
    chunks: list[str] = field(default_factory=list)

    def value(self) -> dict[str, Any]:
        text = "".join(self.chunks)
        if self.kind == "refusal":
            return {"type": "refusal", "refusal": text}
        return text_part(text)


@dataclass
class _Open:
    """The output item being streamed: the message (with its parts) or one function call."""

    index: int
    item: dict[str, Any]
    parts: list[_Part] = field(default_factory=list)
    arguments: list[str] = field(default_factory=list)


class ResponseEvents:
    """Chat chunks in, Responses events out; the assembler keeps the whole completion for the end."""

    def __init__(self, ctx: ResponseContext) -> None:
        self.ctx = ctx
        self.assembler = StreamAssembler()
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.current: _Open | None = None
        self.message_done = False
        self.calls: dict[int, int] = {}  # chat tool-call index -> output index

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def start(self) -> list[Event]:
        """The opening events."""
        snapshot = response_object(self.ctx, status="in_progress", output=[])
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def feed(self, chunk: Any) -> list[Event]:
        """Take one decoded chat chunk; return the events it makes."""
        self.assembler.observe(chunk)
        if not isinstance(chunk, dict):
            return []
        events: list[Event] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = as_dict(choice.get("delta"))
            if isinstance(delta.get("content"), str) and delta["content"]:
                events += self._text("output_text", delta["content"])
            if isinstance(delta.get("refusal"), str) and delta["refusal"]:
                events += self._text("refusal", delta["refusal"])
            for fragment in delta.get("tool_calls") or ():
                if isinstance(fragment, dict):
                    events += self._call(fragment)
        return events

    def _text(self, kind: str, text: str) -> list[Event]:
        events: list[Event] = []
        current = self.current
        if current is None or current.item["type"] != "message":
            if self.message_done or self.calls:
                return []  # text after the tool calls: kept in the final object, not streamed
            events += self._close()
            item = message_item(self.ctx, [], "in_progress")
            current = self.current = _Open(len(self.output), item)
            self.output.append(item)
            events.append(self._event("response.output_item.added", output_index=current.index, item=item))
        if not current.parts or current.parts[-1].kind != kind:
            events += self._close_part(current)
            current.parts.append(_Part(kind))
            part = current.parts[-1].value()
            events.append(self._event("response.content_part.added", **self._where(current), part=part))
        current.parts[-1].chunks.append(text)
        if kind == "refusal":
            events.append(self._event("response.refusal.delta", **self._where(current), delta=text))
        else:
            events.append(
                self._event("response.output_text.delta", **self._where(current), delta=text, logprobs=[])
            )
        return events

    def _where(self, current: _Open) -> dict[str, Any]:
        return {
            "item_id": current.item["id"],
            "output_index": current.index,
            "content_index": len(current.parts) - 1,
        }

    def _close_part(self, current: _Open) -> list[Event]:
        if not current.parts:
            return []
        part = current.parts[-1]
        value = part.value()
        where = self._where(current)
        if part.kind == "refusal":
            done = self._event("response.refusal.done", **where, refusal=value["refusal"])
        else:
            done = self._event("response.output_text.done", **where, text=value["text"], logprobs=[])
        return [done, self._event("response.content_part.done", **where, part=value)]

    def _call(self, fragment: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        chat_index = fragment.get("index", 0)
        chat_index = chat_index if isinstance(chat_index, int) else 0
        function = as_dict(fragment.get("function"))
        if chat_index not in self.calls:
            events += self._close()
            position = len(self.calls)
            call = {"id": fragment.get("id"), "function": {"name": function.get("name"), "arguments": ""}}
            item = call_item(self.ctx, position, call, "in_progress")
            self.calls[chat_index] = len(self.output)
            self.current = _Open(len(self.output), item)
            self.output.append(item)
            events.append(
                self._event("response.output_item.added", output_index=self.current.index, item=item)
            )
        current = self.current
        arguments = function.get("arguments")
        if (
            current is None
            or current.index != self.calls[chat_index]
            or not isinstance(arguments, str)
            or not arguments
        ):
            return events
        current.arguments.append(arguments)
        where = {"item_id": current.item["id"], "output_index": current.index}
        events.append(self._event("response.function_call_arguments.delta", **where, delta=arguments))
        return events

    def _close(self, status: str = "completed") -> list[Event]:
        current, self.current = self.current, None
        if current is None:
            return []
        item = current.item
        if item["type"] == "message":
            events = self._close_part(current)
            item.update(status=status, content=[part.value() for part in current.parts])
            self.message_done = True
        else:
            arguments = "".join(current.arguments)
            item.update(status=status, arguments=arguments)
            where = {"item_id": item["id"], "output_index": current.index}
            events = [
                self._event(
                    "response.function_call_arguments.done", **where, name=item["name"], arguments=arguments
                )
            ]
        self.output[current.index] = item
        events.append(self._event("response.output_item.done", output_index=current.index, item=item))
        return events

    def finish(self, final: dict[str, Any]) -> list[Event]:
        """Close what is open and end with the final object (`response.completed` or `.incomplete`)."""
        status = "incomplete" if final.get("status") == "incomplete" else "completed"
        events = self._close(status)
        if not self.output:  # an empty answer: the final object has one empty message
            events += self._empty_message(final)
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        events.append(self._event(kind, response=final))
        return events

    def _empty_message(self, final: dict[str, Any]) -> list[Event]:
        output = final.get("output") or []
        item = (
            output[0]
            if output and isinstance(output[0], dict)
            else message_item(self.ctx, [text_part("")], "completed")
        )
        added = {**item, "status": "in_progress", "content": []}
        where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
        part = text_part("")
        events = [
            self._event("response.output_item.added", output_index=0, item=added),
            self._event("response.content_part.added", **where, part=part),
            self._event("response.output_text.done", **where, text="", logprobs=[]),
            self._event("response.content_part.done", **where, part=part),
            self._event("response.output_item.done", output_index=0, item=item),
        ]
        self.output.append(item)
        return events

    def fail(self, failed: dict[str, Any]) -> list[Event]:
        """End with `response.failed` carrying the error (open items stay unfinished, as on OpenAI)."""
        self.current = None
        return [self._event("response.failed", response=failed)]

    def partial_output(self) -> list[dict[str, Any]]:
        """The items streamed so far, marked incomplete (for a failed response)."""
        return [{**item, "status": "incomplete"} for item in self.output]


def replay_events(final: dict[str, Any]) -> list[Event]:
    """The whole event stream of a stored response (a retried or re-read stream): no upstream call."""
    events: list[Event] = []

    def add(kind: str, **fields: Any) -> None:
        events.append({"type": kind, "sequence_number": len(events), **fields})

    opening = {**final, "status": "in_progress", "output": [], "usage": None, "completed_at": None}
    add("response.created", response=opening)
    add("response.in_progress", response=opening)
    for index, item in enumerate(final.get("output") or []):
        if item.get("type") == "message":
            add(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "content": []},
            )
            for part_index, part in enumerate(item.get("content") or []):
                where = {"item_id": item["id"], "output_index": index, "content_index": part_index}
                empty = {**part, "refusal": ""} if part.get("type") == "refusal" else {**part, "text": ""}
                add("response.content_part.added", **where, part=empty)
                if part.get("type") == "refusal":
                    add("response.refusal.delta", **where, delta=part.get("refusal", ""))
                    add("response.refusal.done", **where, refusal=part.get("refusal", ""))
                else:
                    add("response.output_text.delta", **where, delta=part.get("text", ""), logprobs=[])
                    add("response.output_text.done", **where, text=part.get("text", ""), logprobs=[])
                add("response.content_part.done", **where, part=part)
        elif item.get("type") == "function_call":
            add(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            where = {"item_id": item["id"], "output_index": index}
            add("response.function_call_arguments.delta", **where, delta=item.get("arguments", ""))
            add(
                "response.function_call_arguments.done",
                **where,
                name=item.get("name"),
                arguments=item.get("arguments", ""),
            )
        add("response.output_item.done", output_index=index, item=item)
    kind = {"incomplete": "response.incomplete", "failed": "response.failed"}.get(
        final.get("status") or "", "response.completed"
    )
    add(kind, response=final)
    return events
