"""Decides the reply to a validated chat request: text or tool call, usage, fault."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from typing import Any

from gateway.mock_upstream.faults import Fault, huge_size
from gateway.mock_upstream.replies import (
    content_text,
    mock_reply,
    mock_tool_call,
    mock_usage,
    response_model,
)
from gateway.mock_upstream.validation import ChatRequest


@dataclasses.dataclass(slots=True)
class Reply:
    """One planned completion: exactly one of `content` and `tool_call` is set."""

    id: str
    created: int
    model: str
    content: str | None
    tool_call: dict[str, Any] | None
    usage: dict[str, Any] | None
    fault: Fault | None

    @property
    def finish_reason(self) -> str:
        """Return "tool_calls" for a tool call reply, else "stop"."""
        return "tool_calls" if self.tool_call is not None else "stop"


def _tool_name(request: ChatRequest) -> str | None:
    """Return the function the reply should call, or None for a text reply."""
    last = request.messages[-1]
    if not request.tools or request.tool_choice == "none" or last.get("role") != "user":
        return None
    choice = request.tool_choice
    if isinstance(choice, dict):
        name = choice["function"]["name"]
        assert isinstance(name, str)
        return name
    name = request.tools[0]["function"]["name"]
    assert isinstance(name, str)
    return name


def plan_reply(request: ChatRequest, fault: Fault | None) -> Reply:
    """Return the reply to `request` (a `huge` fault forces a text reply of that many "x")."""
    huge = fault is not None and fault.name == "huge"
    tool_name = None if huge else _tool_name(request)
    tool_call: dict[str, Any] | None = None
    content: str | None = None
    if tool_name is not None:
        tool_call = mock_tool_call(tool_name, content_text(request.messages[-1].get("content")))
        completion_text = tool_call["function"]["arguments"]
    elif huge:
        assert fault is not None
        completion_text = "x" * huge_size(fault)
        content = completion_text
    else:
        content = completion_text = mock_reply(request.messages)
    nousage = fault is not None and fault.name == "nousage"
    usage = None if nousage else mock_usage(request.messages, completion_text, request.model)
    return Reply(
        id="chatcmpl-" + uuid.uuid4().hex,
        created=int(time.time()),
        model=response_model(request.model),
        content=content,
        tool_call=tool_call,
        usage=usage,
        fault=fault,
    )


def completion_json(reply: Reply) -> str:
    """Return the JSON text of the non-stream `chat.completion` object of `reply`."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.content,
        "refusal": None,
        "annotations": [],
    }
    if reply.tool_call is not None:
        message["tool_calls"] = [reply.tool_call]
    body: dict[str, Any] = {
        "id": reply.id,
        "object": "chat.completion",
        "created": reply.created,
        "model": reply.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}],
        "system_fingerprint": "fp_mock",
    }
    if reply.usage is not None:
        body["usage"] = reply.usage
    return json.dumps(body)
