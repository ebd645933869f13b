"""Validation of chat completion requests, with OpenAI's status codes, messages and params."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from gateway.mock_upstream.errors import (
    MockAPIError,
    empty_array,
    invalid_type,
    invalid_value,
    missing,
)

ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_CONTENT_TYPES = "one of a string or array of objects"
_USER_PARTS = ("text", "image_url", "input_audio", "file")
_ASSISTANT_PARTS = ("text", "refusal")
_TEXT_PARTS = ("text",)
_ALLOWED_KEYS: dict[str, frozenset[str]] = {
    "system": frozenset({"role", "content", "name"}),
    "developer": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset(
        {"role", "content", "name", "tool_calls", "refusal", "function_call", "audio", "annotations"}
    ),
    "tool": frozenset({"role", "content", "tool_call_id"}),
    "function": frozenset({"role", "content", "name"}),
}
_REQUEST_PARAMS = frozenset(
    {
        "model",
        "messages",
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_retention",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)
_FUNCTION_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TOOL_NOT_ANSWERING = (
    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
    "with 'tool_calls'."
)
_UNANSWERED_CALLS = (
    "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
    "'tool_call_id'. The following tool_call_ids did not have response messages: "
)


@dataclasses.dataclass(slots=True)
class ChatRequest:
    """The parts of a validated chat completion request that the mock uses."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    tools: list[dict[str, Any]]
    tool_choice: object


def validate_chat_request(body: object) -> ChatRequest:
    """Validate a parsed chat completion body like OpenAI does; raise MockAPIError on the first problem."""
    if not isinstance(body, dict):
        raise invalid_type("body", "an object", body)
    unknown = sorted(set(body) - _REQUEST_PARAMS)
    if unknown:
        raise MockAPIError(400, f"Unrecognized request argument supplied: {unknown[0]}")
    model = body.get("model")
    if model is None:
        raise missing("model")
    if not isinstance(model, str):
        raise invalid_type("model", "a string", model)
    if not model:
        message = (
            "Invalid 'model': empty string. "
            "Expected a string with minimum length 1, but got an empty string instead."
        )
        raise MockAPIError(400, message, param="model", code="empty_string")
    messages = _check_messages(body.get("messages"))
    stream, include_usage = _check_stream(body)
    tools = _check_tools(body.get("tools"))
    tool_choice = _check_tool_choice(body.get("tool_choice"), tools)
    return ChatRequest(model, messages, stream, include_usage, tools or [], tool_choice)


def _check_messages(messages: object) -> list[dict[str, Any]]:
    if messages is None:
        raise missing("messages")
    if not isinstance(messages, list):
        raise invalid_type("messages", "an array", messages)
    if not messages:
        raise empty_array("messages")
    for i, message in enumerate(messages):
        _check_message(message, f"messages[{i}]")
    _check_tool_sequence(messages)
    return messages


def _check_message(message: object, path: str) -> None:
    if not isinstance(message, dict):
        raise invalid_type(path, "an object", message)
    role = message.get("role")
    if role is None:
        raise missing(f"{path}.role")
    if role not in ROLES:
        raise invalid_value(f"{path}.role", role, ROLES)
    extra = sorted(set(message) - _ALLOWED_KEYS[role])
    if extra:
        text = f"Additional properties are not allowed ('{extra[0]}' was unexpected) - '{path}'"
        raise MockAPIError(400, text, param=f"{path}.{extra[0]}", code="unknown_parameter")
    if role == "assistant":
        _check_assistant(message, path)
    elif role == "tool":
        _check_string_field(message, path, "tool_call_id")
        _check_content(message, path, _TEXT_PARTS)
    elif role == "function":
        _check_string_field(message, path, "name")
        if "content" not in message:
            raise missing(f"{path}.content")
        if message["content"] is not None and not isinstance(message["content"], str):
            raise invalid_type(f"{path}.content", "a string", message["content"])
    else:
        _check_content(message, path, _USER_PARTS if role == "user" else _TEXT_PARTS)
    if "name" in message and not isinstance(message["name"], str):
        raise invalid_type(f"{path}.name", "a string", message["name"])


def _check_string_field(obj: dict[str, Any], path: str, key: str) -> str:
    value = obj.get(key)
    if value is None:
        raise missing(f"{path}.{key}")
    if not isinstance(value, str):
        raise invalid_type(f"{path}.{key}", "a string", value)
    return value


def _check_content(message: dict[str, Any], path: str, part_types: tuple[str, ...]) -> None:
    content = message.get("content")
    if content is None:
        raise missing(f"{path}.content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise invalid_type(f"{path}.content", _CONTENT_TYPES, content)
    if not content:
        raise empty_array(f"{path}.content")
    for j, part in enumerate(content):
        _check_part(part, f"{path}.content[{j}]", part_types)


def _check_part(part: object, path: str, part_types: tuple[str, ...]) -> None:
    if not isinstance(part, dict):
        raise invalid_type(path, "an object", part)
    kind = part.get("type")
    if kind is None:
        raise missing(f"{path}.type")
    if kind not in part_types:
        raise invalid_value(f"{path}.type", kind, part_types)
    if kind in ("text", "refusal"):
        _check_string_field(part, path, kind)
    elif part.get(kind) is None:
        raise missing(f"{path}.{kind}")
    elif not isinstance(part[kind], dict):
        raise invalid_type(f"{path}.{kind}", "an object", part[kind])


def _check_assistant(message: dict[str, Any], path: str) -> None:
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        _check_content(message, path, _ASSISTANT_PARTS)
    for key in ("refusal", "audio", "function_call"):
        value = message.get(key)
        if value is not None and not isinstance(value, str if key == "refusal" else dict):
            raise invalid_type(f"{path}.{key}", "a string" if key == "refusal" else "an object", value)
    tool_calls = message.get("tool_calls")
    if tool_calls is not None:
        _check_tool_calls(tool_calls, f"{path}.tool_calls")
    answered = tool_calls or message.get("refusal") is not None or message.get("function_call") is not None
    if content is None and not answered:
        raise missing(f"{path}.content")


def _check_tool_calls(tool_calls: object, path: str) -> None:
    if not isinstance(tool_calls, list):
        raise invalid_type(path, "an array", tool_calls)
    if not tool_calls:
        raise empty_array(path)
    for k, call in enumerate(tool_calls):
        call_path = f"{path}[{k}]"
        if not isinstance(call, dict):
            raise invalid_type(call_path, "an object", call)
        _check_string_field(call, call_path, "id")
        kind = _check_string_field(call, call_path, "type")
        if kind != "function":
            raise invalid_value(f"{call_path}.type", kind, ("function",))
        function = call.get("function")
        if function is None:
            raise missing(f"{call_path}.function")
        if not isinstance(function, dict):
            raise invalid_type(f"{call_path}.function", "an object", function)
        _check_string_field(function, f"{call_path}.function", "name")
        _check_string_field(function, f"{call_path}.function", "arguments")


def _check_tool_sequence(messages: list[dict[str, Any]]) -> None:
    """Tool messages must answer the assistant tool_calls right before them, and answer all of them."""
    open_ids: set[str] = set()
    pending: list[str] = []
    opened_at = -1
    for i, message in enumerate(messages):
        role = message["role"]
        if role == "tool":
            if message["tool_call_id"] not in open_ids:
                raise MockAPIError(400, _TOOL_NOT_ANSWERING, param=f"messages[{i}].role")
            if message["tool_call_id"] in pending:
                pending.remove(message["tool_call_id"])
            continue
        if pending:
            raise MockAPIError(
                400, _UNANSWERED_CALLS + ", ".join(pending), param=f"messages[{opened_at}].role"
            )
        open_ids.clear()
        if role == "assistant" and message.get("tool_calls"):
            pending = [call["id"] for call in message["tool_calls"]]
            open_ids.update(pending)
            opened_at = i
    if pending:
        raise MockAPIError(400, _UNANSWERED_CALLS + ", ".join(pending), param=f"messages[{opened_at}].role")


def _check_stream(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid_type("stream", "a boolean", stream)
    options = body.get("stream_options")
    if options is None:
        return bool(stream), False
    if stream is not True:
        message = "The 'stream_options' parameter is only allowed when 'stream' is enabled."
        raise MockAPIError(400, message, param="stream_options", code="invalid_value")
    if not isinstance(options, dict):
        raise invalid_type("stream_options", "an object", options)
    include_usage = options.get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise invalid_type("stream_options.include_usage", "a boolean", include_usage)
    return True, bool(include_usage)


def _check_tools(tools: object) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise invalid_type("tools", "an array", tools)
    if not tools:
        raise empty_array("tools")
    for i, tool in enumerate(tools):
        path = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise invalid_type(path, "an object", tool)
        kind = _check_string_field(tool, path, "type")
        if kind != "function":
            raise invalid_value(f"{path}.type", kind, ("function",))
        function = tool.get("function")
        if function is None:
            raise missing(f"{path}.function")
        if not isinstance(function, dict):
            raise invalid_type(f"{path}.function", "an object", function)
        name = _check_string_field(function, f"{path}.function", "name")
        if not _FUNCTION_NAME_RE.match(name):
            message = (
                f"Invalid '{path}.function.name': string does not match pattern. "
                "Expected a string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'."
            )
            raise MockAPIError(400, message, param=f"{path}.function.name", code="invalid_value")
    return tools


def _check_tool_choice(tool_choice: object, tools: list[dict[str, Any]] | None) -> object:
    if tool_choice is None:
        return None
    if tools is None:
        message = "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified."
        raise MockAPIError(400, message, param="tool_choice")
    if isinstance(tool_choice, str):
        if tool_choice not in ("none", "auto", "required"):
            raise invalid_value("tool_choice", tool_choice, ("none", "auto", "required"))
        return tool_choice
    if not isinstance(tool_choice, dict):
        raise invalid_type("tool_choice", "one of a string or object", tool_choice)
    if tool_choice.get("type") != "function" or not isinstance(tool_choice.get("function"), dict):
        raise invalid_value("tool_choice.type", tool_choice.get("type"), ("function",))
    _check_string_field(tool_choice["function"], "tool_choice.function", "name")
    return tool_choice
