"""Pure checks of the parts of a chat-completions body the gateway reads; the rest is the upstream's.

Every field the gateway reads (to store, compare, count or price it) must have the type OpenAI documents,
or the request is a 400 whose `param` names the field. Fields the gateway does not read pass through for
the upstream to judge.
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

from gateway.config import HISTORY_STRATEGIES
from gateway.errors import InvalidRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
CONTENT_REQUIRED = frozenset({"system", "developer", "user", "tool"})
MAX_MODEL_LENGTH = 200  # the request log's column
MAX_IDEMPOTENCY_KEY = 256
# A JSON escape of a UTF-16 surrogate: only then can a decoded string hold a lone surrogate.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
INVALID_JSON = "We could not parse the JSON body of your request. The body must be valid JSON."
MAX_DEPTH = (
    128  # nesting of arrays and objects; far deeper than any OpenAI request, far from recursion limits
)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _has_lone_surrogate(value: Any) -> bool:
    """True when a decoded JSON value holds a string that is not valid Unicode (iterative: no recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _too_deep(value: Any, limit: int) -> bool:
    """True when arrays and objects nest more than `limit` levels deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def nesting_error() -> InvalidRequest:
    """The 400 of a body nested more than MAX_DEPTH levels deep."""
    return InvalidRequest(
        f"The JSON body nests arrays and objects more than {MAX_DEPTH} levels deep.", code="invalid_json"
    )


def check_depth(raw: bytes, body: Any) -> None:
    """400 when the decoded body nests arrays and objects more than MAX_DEPTH levels deep."""
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _too_deep(body, MAX_DEPTH):
        raise nesting_error()


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object of valid Unicode (no NaN, no lone surrogates).

    Arrays and objects nested deeper than MAX_DEPTH are refused (400): such a body could be parsed but
    not serialized again.
    """
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest(INVALID_JSON, code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    check_depth(raw, body)
    if SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(body):
        raise InvalidRequest(
            "The JSON body holds a \\u escape of a lone UTF-16 surrogate, which is not valid Unicode.",
            code="invalid_json",
        )
    return body


def _wrong_type(param: str, expected: str) -> NoReturn:
    raise InvalidRequest(
        f"Invalid type for '{param}': expected {expected}.", param=param, code="invalid_type"
    )


def _check_parts(content: list[Any], where: str) -> None:
    for index, part in enumerate(content):
        param = f"{where}.content[{index}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            _wrong_type(param, "an object with a 'type'")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            _wrong_type(f"{param}.text", "a string")


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
        _wrong_type(f"{where}.content", "a string or an array of content parts")
    _check_parts(content, where)


def _check_tool_calls(message: dict[str, Any], where: str) -> None:
    tool_calls = message.get("tool_calls")
    if tool_calls is None:
        return
    if not isinstance(tool_calls, list):
        _wrong_type(f"{where}.tool_calls", "an array")
    for index, call in enumerate(tool_calls):
        if not isinstance(call, dict):
            _wrong_type(f"{where}.tool_calls[{index}]", "an object")
        function = call.get("function")
        if function is not None and not isinstance(function, dict):
            _wrong_type(f"{where}.tool_calls[{index}].function", "an object")


def _check_message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        _wrong_type(where, "an object")
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
    _check_tool_calls(message, where)
    for key in ("name", "tool_call_id"):
        if message.get(key) is not None and not isinstance(message[key], str):
            _wrong_type(f"{where}.{key}", "a string")


def _check_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest("Missing required parameter: 'messages'.", param="messages")
    if not isinstance(messages, list):
        _wrong_type("messages", "an array")
    if not messages:
        raise InvalidRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            param="messages",
            code="empty_array",
        )
    for index, message in enumerate(messages):
        _check_message(message, f"messages[{index}]")
    return messages


def _check_model(model: Any) -> None:
    if model is None:
        return
    if not isinstance(model, str):
        _wrong_type("model", "a string")
    if len(model) > MAX_MODEL_LENGTH or CONTROL_CHARACTERS.search(model):
        raise InvalidRequest(
            f"Invalid value for 'model': expected at most {MAX_MODEL_LENGTH} printable characters.",
            param="model",
            code="invalid_value",
        )


def _check_options(body: dict[str, Any]) -> None:
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        _wrong_type("stream", "a boolean")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            _wrong_type("stream_options", "an object")
        usage = options.get("include_usage")
        if usage is not None and not isinstance(usage, bool):
            _wrong_type("stream_options.include_usage", "a boolean")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            _wrong_type("tools", "an array")
        for index, tool in enumerate(tools):
            if not isinstance(tool, dict):
                _wrong_type(f"tools[{index}]", "an object")


def check_chat_body(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Validate every field the gateway reads (messages, model, stream, stream_options, tools)."""
    messages = _check_messages(body)
    _check_model(body.get("model"))
    _check_options(body)
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


def parse_strategy_header(value: str | None) -> str | None:
    """X-History-Strategy: absent -> None; sliding, stable or summarize (any case); anything else -> 400."""
    if value is None:
        return None
    text = value.strip().lower()
    if text not in HISTORY_STRATEGIES:
        raise InvalidRequest(
            f"Unknown history strategy {value!r} in X-History-Strategy: "
            "expected sliding, stable or summarize.",
            param="X-History-Strategy",
            code="invalid_header",
        )
    return text


def check_idempotency_key(value: str | None) -> str | None:
    """An Idempotency-Key header: absent -> None; 1-256 printable ASCII characters, anything else -> 400."""
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY or not value.isascii() or not value.isprintable():
        raise InvalidRequest(
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters.",
            param="Idempotency-Key",
            code="invalid_header",
        )
    return value
