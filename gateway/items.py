"""Pure translation of stored chat messages into Responses-API conversation items, and item ids.

Each stored message (numbered by its `seq`) becomes one or more items, in this order:
- a user, system or developer message: one `message` item, `msg_<seq>`, with `input_text` (and
  `input_image`, `input_file`) parts;
- an assistant message: a `message` item `msg_<seq>` with `output_text` (and `refusal`) parts when it
  has content, then one `function_call` (or `custom_tool_call`) item `fc_<seq>_<n>` per tool call;
- a tool (or legacy function) result: one `function_call_output` item, `fco_<seq>`.
An item id therefore names a position (seq, n) in the conversation, which is what `after` pages from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gateway.errors import InvalidRequest

Item = dict[str, Any]

_ITEM_ID = re.compile(r"(?:msg|fco)_(\d{1,10})|fc_(\d{1,10})_(\d{1,6})")


def item_position(item_id: str) -> tuple[int, int]:
    """The (seq, n) position an item id names; a 400 on anything that is not a gateway item id."""
    match = _ITEM_ID.fullmatch(item_id)
    if match is None:
        raise InvalidRequest(
            f"Invalid 'after': {item_id!r} is not an item id of this conversation.",
            param="after",
            code="invalid_value",
        )
    if match.group(1) is not None:
        return int(match.group(1)), 0
    return int(match.group(2)), 1 + int(match.group(3))


def _input_part(part: Any) -> Any:
    if isinstance(part, str):
        return {"type": "input_text", "text": part}
    if not isinstance(part, Mapping):
        return part
    kind = part.get("type")
    if kind == "text":
        return {"type": "input_text", "text": part.get("text", "")}
    if kind == "image_url":
        image = part.get("image_url")
        image = image if isinstance(image, Mapping) else {"url": image}
        return {"type": "input_image", "image_url": image.get("url"), "detail": image.get("detail") or "auto"}
    if kind == "file":
        file = part.get("file")
        file = file if isinstance(file, Mapping) else {}
        fields = {key: file[key] for key in ("file_id", "filename", "file_data") if key in file}
        return {"type": "input_file", **fields}
    return dict(part)  # input_audio and parts the Responses API has no name for are shown as stored


def _input_parts(content: Any) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "input_text", "text": content}]
    if isinstance(content, list):
        return [_input_part(part) for part in content]
    return []


def _output_parts(message: Mapping[str, Any]) -> list[Any]:
    content = message.get("content")
    parts: list[Any] = []
    if isinstance(content, str) and content:
        parts.append({"type": "output_text", "text": content, "annotations": []})
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                parts.append({"type": "output_text", "text": part.get("text", ""), "annotations": []})
            elif isinstance(part, Mapping) and part.get("type") == "refusal":
                parts.append({"type": "refusal", "refusal": part.get("refusal", "")})
            else:
                parts.append(part)
    if isinstance(message.get("refusal"), str):
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    return parts


def _call_item(seq: int, index: int, call: Any) -> Item:
    call = call if isinstance(call, Mapping) else {}
    item_id = f"fc_{seq}_{index}"
    call_id = call.get("id") if isinstance(call.get("id"), str) else item_id
    if call.get("type") == "custom" and isinstance(call.get("custom"), Mapping):
        custom = call["custom"]
        return {
            "id": item_id,
            "type": "custom_tool_call",
            "call_id": call_id,
            "name": custom.get("name"),
            "input": custom.get("input"),
            "status": "completed",
        }
    function = call.get("function") if isinstance(call.get("function"), Mapping) else call
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": function.get("name"),
        "arguments": function.get("arguments"),
        "status": "completed",
    }


def _assistant_items(seq: int, message: Mapping[str, Any]) -> list[Item]:
    calls = message.get("tool_calls")
    calls = list(calls) if isinstance(calls, list) else []
    if isinstance(message.get("function_call"), Mapping):
        calls.append(message["function_call"])
    parts = _output_parts(message)
    items: list[Item] = []
    if parts or not calls:
        items.append(
            {
                "id": f"msg_{seq}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": parts,
            }
        )
    items.extend(_call_item(seq, index, call) for index, call in enumerate(calls))
    return items


def _output_value(content: Any) -> Any:
    if isinstance(content, list):
        return _input_parts(content)
    return content if isinstance(content, str) else ""


def message_items(seq: int, message: Mapping[str, Any]) -> list[Item]:
    """The conversation items of one stored message (at least one), in order."""
    role = message.get("role")
    if role == "assistant":
        return _assistant_items(seq, message)
    if role in ("tool", "function"):
        item: Item = {
            "id": f"fco_{seq}",
            "type": "function_call_output",
            "status": "completed",
            "call_id": message.get("tool_call_id"),
            "output": _output_value(message.get("content")),
        }
        if role == "function":
            item["name"] = message.get("name")
        return [item]
    return [
        {
            "id": f"msg_{seq}",
            "type": "message",
            "role": role if isinstance(role, str) else "unknown",
            "status": "completed",
            "content": _input_parts(message.get("content")),
        }
    ]


def item_key(item: Item) -> tuple[int, int]:
    """The (seq, n) position of an item made by message_items."""
    return item_position(item["id"])
