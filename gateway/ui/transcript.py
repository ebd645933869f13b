"""A conversation's stored messages as text: roles, names, contents, tool calls and the calls results answer.

Everything here is caller-supplied (untrusted): it only ever becomes escaped text through `html.el`.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.ui import views
from gateway.ui.html import Child, Markup, el


def _part(part: Any) -> Child:
    if not isinstance(part, dict):
        return el("span", json.dumps(part, ensure_ascii=False), class_="part")
    kind = part.get("type")
    if kind == "text" and isinstance(part.get("text"), str):
        return el("div", part["text"], class_="text")
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return el("div", "Refusal: ", part["refusal"], class_="text refusal")
    return el("div", f"[{kind if isinstance(kind, str) else 'part'}]", class_="part")


def _content(content: Any) -> Child:
    if content is None:
        return None
    if isinstance(content, str):
        return el("div", content, class_="text")
    if isinstance(content, list):
        return [_part(part) for part in content]
    return el("div", json.dumps(content, ensure_ascii=False), class_="text")


def _tool_calls(calls: Any) -> Child:
    if not isinstance(calls, list) or not calls:
        return None
    items = []
    for call in calls:
        call = call if isinstance(call, dict) else {}
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        name, arguments = function.get("name"), function.get("arguments")
        shown = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        items.append(
            el(
                "li",
                el("span", "Tool call ", el("code", str(name)), f" ({call.get('id')})", class_="call"),
                el("pre", shown),
            )
        )
    return el("ul", items, class_="tool-calls")


def message_view(seq: int, message: dict[str, Any], created: float, status: tuple[str, str] | None) -> Markup:
    """One stored message: role, name, content, tool calls or the call a tool result answers."""
    role = str(message.get("role"))
    meta: list[Child] = [el("span", role, class_=f"role role-{role if role.isalpha() else 'other'}")]
    if isinstance(message.get("name"), str):
        meta.append(el("span", message["name"], class_="name"))
    if isinstance(message.get("tool_call_id"), str):
        meta.append(el("span", "result of ", el("code", message["tool_call_id"]), class_="call"))
    meta.append(el("span", f"#{seq} · {views.utc_time(created)}", class_="when"))
    if status is not None:
        meta.append(el("span", status[1], class_=f"badge {status[0]}"))
    refusal = message.get("refusal")
    return el(
        "li",
        el("div", meta, class_="meta"),
        _content(message.get("content")),
        el("div", "Refusal: ", refusal, class_="text refusal") if isinstance(refusal, str) else None,
        _tool_calls(message.get("tool_calls")),
        class_=f"message role-{role if role.isalpha() else 'other'}",
        id=f"msg-{seq}",
        data_status=status[0] if status else None,
    )


def summarized_through(obj: dict[str, Any]) -> int:
    """How many of the first stored messages the conversation's summary covers (0 without one)."""
    summary = obj.get("summary")
    through = summary.get("through") if isinstance(summary, dict) else None
    return through if isinstance(through, int) else 0


def status_in_last_turn(
    seq: int, window: tuple[int, int] | None, summarized: int = 0
) -> tuple[str, str] | None:
    """How the last turn used a message: left out (maybe covered by the summary), sent, or new in it."""
    if window is None:
        return None
    start, before = window
    if seq < start:
        if seq < summarized:
            return "left-out", "left out of the last turn, in the summary"
        return "left-out", "left out of the last turn"
    if seq < before:
        return "sent", "sent in the last turn"
    return "new", "new in the last turn"
