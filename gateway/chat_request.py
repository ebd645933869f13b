"""Pure checks of the parts of a chat-completions body the gateway reads; the rest is the upstream's."""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.errors import InvalidRequest

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
CONTENT_REQUIRED = frozenset({"system", "developer", "user", "tool"})


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be valid JSON.",
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return body


def check_unicode(raw: bytes, body: dict[str, Any]) -> None:
    """Reject a body whose strings hold a lone UTF-16 surrogate (`\\ud800`): not Unicode, so never storable.

    The regex only looks for surrogate escapes, so the common body (no `\\u`) costs one substring search.
    """
    if b"\\u" not in raw or _SURROGATE_ESCAPE.search(raw) is None:
        return
    try:
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise InvalidRequest(
            "The JSON body contains a lone UTF-16 surrogate escape, which is not valid Unicode text.",
            code="invalid_json",
        ) from None


def _check_content(message: dict[str, Any], where: str) -> None:
    role = message["role"]
    content = message.get("content")
    if content is None:
        if role in CONTENT_REQUIRED:
            raise InvalidRequest(f"Missing required parameter: '{where}.content'.", param=f"{where}.content")
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidRequest(
            f"Invalid type for '{where}.content': expected a string or an array of content parts.",
            param=f"{where}.content",
            code="invalid_type",
        )
    for index, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InvalidRequest(
                f"Invalid type for '{where}.content[{index}]': expected an object with a 'type'.",
                param=f"{where}.content[{index}]",
                code="invalid_type",
            )


def _check_message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise InvalidRequest(
            f"Invalid type for '{where}': expected an object.", param=where, code="invalid_type"
        )
    role = message.get("role")
    if role is None:
        raise InvalidRequest(f"Missing required parameter: '{where}.role'.", param=f"{where}.role")
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidRequest(
            f"Invalid value for '{where}.role': expected one of {', '.join(sorted(ROLES))}.",
            param=f"{where}.role",
            code="invalid_value",
        )
    _check_content(message, where)
    tool_calls = message.get("tool_calls")
    if tool_calls is not None and not isinstance(tool_calls, list):
        raise InvalidRequest(
            f"Invalid type for '{where}.tool_calls': expected an array.",
            param=f"{where}.tool_calls",
            code="invalid_type",
        )
    for key in ("name", "tool_call_id"):
        if message.get(key) is not None and not isinstance(message[key], str):
            raise InvalidRequest(
                f"Invalid type for '{where}.{key}': expected a string.",
                param=f"{where}.{key}",
                code="invalid_type",
            )


def check_chat_body(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Validate `messages` and `stream`; return the messages."""
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest("Missing required parameter: 'messages'.", param="messages")
    if not isinstance(messages, list):
        raise InvalidRequest(
            "Invalid type for 'messages': expected an array.", param="messages", code="invalid_type"
        )
    if not messages:
        raise InvalidRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            param="messages",
            code="empty_array",
        )
    for index, message in enumerate(messages):
        _check_message(message, f"messages[{index}]")
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise InvalidRequest(
            "Invalid type for 'stream': expected a boolean.", param="stream", code="invalid_type"
        )
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest(
            "Invalid type for 'stream_options': expected an object.",
            param="stream_options",
            code="invalid_type",
        )
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest(
            "Invalid type for 'model': expected a string.", param="model", code="invalid_type"
        )
    return messages


def parse_limit_header(name: str, value: str | None) -> int | None:
    """A history-limit header: absent -> None, a non-negative integer, anything else -> 400."""
    if value is None:
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise InvalidRequest(
            f"{name} must be a non-negative whole number, got {value!r}.", param=name, code="invalid_header"
        )
    return int(text)
