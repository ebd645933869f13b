"""Pure dedupe logic: when two messages mean the same, and which leading part of a request is already stored.

Clients resend what they were given in their own shape: agent frameworks rebuild `function.arguments` from
the parsed object (`{"a":1}` for a stored `{"a": 1}`), send content as a list of text parts, drop null
fields. Two messages are the same when role, name, tool_call_id, content and tool calls are equal, where

- `function.arguments` are compared as parsed JSON values when both parse (key order and whitespace
  ignored), as strings otherwise;
- a string content equals a content list made only of text parts (other keys of a part, such as
  `cache_control`, ignored) whose texts concatenated give that string;
- missing, null and (on an assistant message with tool calls) empty content are equal;
- a missing tool-call `type` equals `"function"`; other fields (`refusal`, `annotations`, a tool call's
  `index`, ...) are ignored.

`comparable` maps a message to one canonical value, so equality is a comparison (or a digest) of those.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, NoReturn

Message = dict[str, Any]


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _canonical_json(value: Any) -> Any:
    """A parsed JSON value with integral floats as ints, so `1.0` (Python) equals `1` (JavaScript)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _canonical_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical_json(item) for item in value]
    return value


def _comparable_arguments(arguments: Any) -> Any:
    """Arguments as ["json", canonical text] when they parse as JSON, else ["text", string] (or as given).

    Too deeply nested JSON (past Python's recursion limit) compares as a string.
    """
    if not isinstance(arguments, str):
        return ["raw", arguments]
    try:
        parsed = json.loads(arguments, parse_constant=_reject_constant)
        canonical = json.dumps(
            _canonical_json(parsed), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
    except (ValueError, RecursionError):
        return ["text", arguments]
    return ["json", canonical]


def _comparable_tool_calls(tool_calls: Any) -> Any:
    if not tool_calls:
        return None
    if not isinstance(tool_calls, list):
        return tool_calls
    normalized = []
    for call in tool_calls:
        if not isinstance(call, dict):
            normalized.append(call)
            continue
        raw_function = call.get("function")
        function: dict[str, Any] = raw_function if isinstance(raw_function, dict) else {}
        normalized.append(
            {
                "id": call.get("id"),
                "type": call.get("type") or "function",
                "function": {
                    "name": function.get("name"),
                    "arguments": _comparable_arguments(function.get("arguments")),
                },
            }
        )
    return normalized


def _comparable_content(content: Any) -> Any:
    """A list of text parts only is its texts joined; anything else is itself."""
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        for part in content
    ):
        return "".join(part["text"] for part in content)
    return content


def comparable(message: Message) -> dict[str, Any]:
    """The canonical value of a message: equal for two messages exactly when they mean the same."""
    tool_calls = _comparable_tool_calls(message.get("tool_calls"))
    content = _comparable_content(message.get("content"))
    if tool_calls and content == "":
        content = None
    return {
        "role": message.get("role"),
        "content": content,
        "name": message.get("name"),
        "tool_calls": tool_calls,
        "tool_call_id": message.get("tool_call_id"),
    }


def message_key(message: Message) -> str:
    """`comparable` as one canonical JSON string (compared and hashed; `true` never equals `1`)."""
    return json.dumps(comparable(message), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def same_message(first: Message, second: Message) -> bool:
    """True when two messages mean the same under the rules of this module."""
    return message_key(first) == message_key(second)


def holds_turn(messages: Sequence[Message]) -> bool:
    """True when the messages hold a whole turn: a user message with an assistant message after it."""
    roles = [message.get("role") for message in messages]
    if "user" not in roles or "assistant" not in roles:
        return False
    return roles.index("user") < len(roles) - 1 - roles[::-1].index("assistant")


def overlap_search_limit(request_count: int, stored_count: int) -> int:
    """How many of the newest stored messages the overlap search may need (0: none can be deduped).

    A run shorter than the whole history needs a whole turn, so at least two messages; a run of the whole
    history needs the request to hold all of it.
    """
    if stored_count == 0:
        return 0
    if request_count >= stored_count:
        return stored_count
    return request_count if request_count >= 2 else 0


def stored_run_length(request: Sequence[Message], tail: Sequence[Message], stored_count: int) -> int:
    """How many leading request messages are already stored (the longest run wins; 0 when none).

    `tail` is the newest stored messages, oldest first (the last `overlap_search_limit` of them, or more).
    A leading run of `request` counts as stored when it equals the last messages of the stored history and
    is either the whole history or holds a whole turn, so a lone resent message is never a duplicate.
    """
    request_keys = [message_key(message) for message in request[: len(tail)]]
    if not request_keys:
        return 0
    tail_keys = [message_key(message) for message in tail[len(tail) - len(request_keys) :]]
    last = tail_keys[-1]
    for length in range(len(request_keys), 0, -1):
        if request_keys[length - 1] != last or request_keys[:length] != tail_keys[-length:]:
            continue
        if length == stored_count or holds_turn(request[:length]):
            return length
    return 0
