"""Pure functions that decide what the mock upstream answers: reply text, tool calls, usage."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.window import MESSAGES_TO_FOLD, SUMMARY_SO_FAR

MOCK_DATED_MODELS: dict[str, str] = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06"}

_PIECE_RE = re.compile(r"\S+\s*|\s+")


def response_model(model: str) -> str:
    """Return the model name the mock reports: the dated name for known aliases, else `model`."""
    return MOCK_DATED_MODELS.get(model, model)


def content_text(content: object) -> str:
    """Return a message content's text: the string itself, or the joined `text` of its text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """Return the text of the last `user` message, or "" when there is none."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


_FACT_RE = re.compile(r"\bfacts?\b.*", re.IGNORECASE)


def mock_summary(request_text: str) -> str | None:
    """The deterministic answer to a gateway summary request, or None when `request_text` is not one.

    It keeps every line of the summary so far, and from every line of the messages to fold in that
    states a fact (holds the word "fact") the statement itself, from that word on; in order, without
    repeats (a user's fact and the assistant's echo of it are one line).
    """
    if MESSAGES_TO_FOLD not in request_text:
        return None
    head, _, folded = request_text.partition(MESSAGES_TO_FOLD)
    previous = head.split(SUMMARY_SO_FAR, 1)[-1]
    lines = [line.strip() for line in previous.splitlines() if line.strip() and line.strip() != "(none)"]
    for line in folded.splitlines():
        found = _FACT_RE.search(line)
        if found is not None:
            lines.append(found.group(0).strip())
    kept = list(dict.fromkeys(lines))
    return "\n".join(kept) if kept else "(no facts so far)"


def mock_reply(messages: Sequence[Mapping[str, Any]]) -> str:
    """Return the assistant text of a non-tool reply to `messages` (a summary request gets its summary)."""
    n = len(messages)
    if messages and messages[-1].get("role") == "user":
        summary = mock_summary(content_text(messages[-1].get("content")))
        if summary is not None:
            return summary
    if messages and messages[-1].get("role") == "tool":
        return f"[{n} messages] tool result: {content_text(messages[-1].get('content'))}"
    return f"[{n} messages] {last_user_text(messages)}"


def mock_usage(messages: Sequence[Mapping[str, Any]], completion_text: str, model: str) -> dict[str, Any]:
    """Return the deterministic usage object of a reply `completion_text` to `messages`."""
    prompt_tokens = sum(4 + len(json.dumps(message.get("content"))) // 4 for message in messages)
    completion_tokens = max(1, len(completion_text) // 4)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 64 * (prompt_tokens // 128)},
        "completion_tokens_details": {"reasoning_tokens": 8 if model.startswith("o") else 0},
    }


def mock_tool_call(tool_name: str, user_text: str) -> dict[str, Any]:
    """Return the one tool call the mock makes for `user_text`."""
    call_id = "call_" + hashlib.sha256(user_text.encode()).hexdigest()[:12]
    arguments = json.dumps({"input": user_text})
    return {"id": call_id, "type": "function", "function": {"name": tool_name, "arguments": arguments}}


def split_words(text: str) -> list[str]:
    """Split `text` into stream pieces: each word with the whitespace that follows it."""
    return _PIECE_RE.findall(text) or [text]


def split_even(text: str, parts: int = 3) -> list[str]:
    """Split `text` into `parts` nearly equal non-empty pieces (fewer when `text` is short)."""
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)] or [text]
