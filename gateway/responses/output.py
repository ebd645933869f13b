"""Pure translation of a chat completion into the Responses-API `response` object.

Output item ids are derived from the response id (`msg_<hex>` for the message, `fc_<hex>_<n>` for the
n-th function call), so the streamed items, the final object and a later retrieval all agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.responses.request import ResponsesRequest

Item = dict[str, Any]
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


@dataclass(frozen=True)
class ResponseContext:
    """What a response object carries besides the completion: its id, time, request and state links."""

    id: str
    created_at: int
    request: ResponsesRequest
    conversation_id: str | None = None

    @property
    def hex(self) -> str:
        """The id without its `resp_` prefix, the root of its output item ids."""
        return self.id.removeprefix("resp_")

    def message_id(self) -> str:
        """The id of the response's output message."""
        return f"msg_{self.hex}"

    def call_id(self, index: int) -> str:
        """The id of the response's n-th function call item."""
        return f"fc_{self.hex}_{index}"


def as_dict(value: Any) -> dict[str, Any]:
    """The value when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def response_usage(usage: Any) -> dict[str, Any] | None:
    """Chat-completions usage as Responses usage (None when the upstream sent none)."""
    if not isinstance(usage, dict):
        return None

    def number(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    prompt = usage.get("prompt_tokens_details")
    completion = usage.get("completion_tokens_details")
    input_tokens = number(usage.get("prompt_tokens"))
    output_tokens = number(usage.get("completion_tokens"))
    total = usage.get("total_tokens")
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {
            "cached_tokens": number(prompt.get("cached_tokens")) if isinstance(prompt, dict) else 0,
            "cache_write_tokens": 0,
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {
            "reasoning_tokens": number(completion.get("reasoning_tokens"))
            if isinstance(completion, dict)
            else 0
        },
        "total_tokens": number(total) if total is not None else input_tokens + output_tokens,
    }


def finish_status(finish_reason: Any) -> tuple[str, dict[str, Any] | None]:
    """The response status and incomplete_details of a chat finish_reason."""
    reason = INCOMPLETE_REASONS.get(finish_reason) if isinstance(finish_reason, str) else None
    if reason is None:
        return "completed", None
    return "incomplete", {"reason": reason}


def text_part(text: str) -> dict[str, Any]:
    """An output_text content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(ctx: ResponseContext, parts: list[dict[str, Any]], status: str) -> Item:
    """The response's assistant message item."""
    return {
        "id": ctx.message_id(),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": parts,
    }


def call_item(ctx: ResponseContext, index: int, call: Any, status: str) -> Item:
    """The response's n-th function_call item, from a chat tool call."""
    call = as_dict(call)
    function = as_dict(call.get("function"))
    call_id = call.get("id") if isinstance(call.get("id"), str) else ctx.call_id(index)
    return {
        "id": ctx.call_id(index),
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": function.get("name") if isinstance(function.get("name"), str) else "",
        "arguments": function.get("arguments") if isinstance(function.get("arguments"), str) else "",
    }


def message_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The output parts of a chat assistant message: its text, then its refusal."""
    parts = []
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    if isinstance(content, str) and content:
        parts.append(text_part(content))
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    return parts


def output_items(ctx: ResponseContext, message: dict[str, Any], status: str) -> list[Item]:
    """The output of a chat assistant message: a message item (when it says something), then its calls."""
    item_status = "incomplete" if status == "incomplete" else "completed"
    raw_calls = message.get("tool_calls")
    calls: list[Any] = raw_calls if isinstance(raw_calls, list) else []
    parts = message_parts(message)
    items = []
    if parts or not calls:
        items.append(message_item(ctx, parts or [text_part("")], item_status))
    items.extend(call_item(ctx, index, call, item_status) for index, call in enumerate(calls))
    return items


def response_object(
    ctx: ResponseContext,
    *,
    status: str,
    output: list[Item],
    model: str | None = None,
    usage: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    incomplete_details: dict[str, Any] | None = None,
    completed_at: int | None = None,
) -> dict[str, Any]:
    """The `response` object in the shape the official SDKs parse."""
    request = ctx.request
    echo = request.echo
    text = as_dict(echo.get("text"))
    reasoning = as_dict(echo.get("reasoning"))
    return {
        "id": ctx.id,
        "object": "response",
        "created_at": ctx.created_at,
        "status": status,
        "background": False,
        "completed_at": completed_at,
        "conversation": {"id": ctx.conversation_id} if ctx.conversation_id else None,
        "error": error,
        "incomplete_details": incomplete_details,
        "instructions": request.instructions,
        "max_output_tokens": echo.get("max_output_tokens"),
        "max_tool_calls": echo.get("max_tool_calls"),
        "metadata": echo.get("metadata") or {},
        "model": model or request.model,
        "output": output,
        "parallel_tool_calls": echo.get("parallel_tool_calls", True),
        "previous_response_id": request.previous_response_id,
        "prompt": None,
        "prompt_cache_key": echo.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": echo.get("safety_identifier"),
        "service_tier": echo.get("service_tier", "default"),
        "store": request.store,
        "temperature": echo.get("temperature"),
        "text": {
            "format": text.get("format") or {"type": "text"},
            "verbosity": text.get("verbosity") or "medium",
        },
        "tool_choice": echo.get("tool_choice", "auto"),
        "tools": echo.get("tools") or [],
        "top_logprobs": echo.get("top_logprobs", 0),
        "top_p": echo.get("top_p"),
        "truncation": echo.get("truncation", "disabled"),
        "usage": usage,
        "user": echo.get("user"),
    }


def completed_response(ctx: ResponseContext, completion: Any, completed_at: int) -> dict[str, Any]:
    """The final response object of a chat completion (choice 0): completed or incomplete."""
    choice: dict[str, Any] = {}
    if isinstance(completion, dict) and isinstance(completion.get("choices"), list) and completion["choices"]:
        first = completion["choices"][0]
        choice = as_dict(first)
    message = as_dict(choice.get("message"))
    status, incomplete = finish_status(choice.get("finish_reason"))
    model = completion.get("model") if isinstance(completion, dict) else None
    return response_object(
        ctx,
        status=status,
        output=output_items(ctx, message, status),
        model=model if isinstance(model, str) and model else None,
        usage=response_usage(completion.get("usage") if isinstance(completion, dict) else None),
        incomplete_details=incomplete,
        completed_at=completed_at if status == "completed" else None,
    )


def failed_response(
    ctx: ResponseContext, message: str, *, output: list[Item], usage: Any = None
) -> dict[str, Any]:
    """The response object of a response that failed mid-stream."""
    error = {"code": "server_error", "message": message}
    return response_object(ctx, status="failed", output=output, error=error, usage=response_usage(usage))
