"""Pure: stored tool calls that were never answered are not replayed upstream.

A client may end a turn on an assistant tool call and never send its result (instructor's structured output
is a forced tool call; a user may simply move on). Upstreams reject a history holding such a call ("An
assistant message with 'tool_calls' must be followed by tool messages..."), so when composing the upstream
request each replayed assistant message keeps only the tool calls answered by the tool messages right after
it; its content stays, and a message left with neither content nor tool calls is left out. Stored messages
never change, and the turn in progress is untouched: tool results this request sends for the last stored
assistant message answer it as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.history import StoredMessage

Message = dict[str, Any]


def _answered_ids(bodies: Sequence[Message], start: int) -> set[Any]:
    """The tool_call_ids of the run of tool messages that starts at `bodies[start]`."""
    answered = set()
    index = start
    while index < len(bodies) and bodies[index].get("role") == "tool":
        answered.add(bodies[index].get("tool_call_id"))
        index += 1
    return answered


def _has_content(content: Any) -> bool:
    if isinstance(content, list):
        return any(not (isinstance(part, dict) and part.get("text") == "") for part in content)
    return content is not None and content != ""


def answered_only(message: Message, answered: set[Any]) -> Message | None:
    """The message without its tool calls that are not in `answered`; None when nothing is left to send."""
    calls = message.get("tool_calls")
    if message.get("role") != "assistant" or not isinstance(calls, list) or not calls:
        return message
    kept = [call for call in calls if isinstance(call, dict) and call.get("id") in answered]
    if len(kept) == len(calls):
        return message
    trimmed = {key: value for key, value in message.items() if key != "tool_calls"}
    if kept:
        trimmed["tool_calls"] = kept
    elif not _has_content(message.get("content")):
        return None
    return trimmed


def sendable_history(window: Sequence[StoredMessage], new: Sequence[Message]) -> list[StoredMessage]:
    """The budgeted history as it is sent: every assistant tool call answered right after it, or left out."""
    if not any('"tool_calls"' in stored.json for stored in window):
        return list(window)  # no tool calls at all (the usual case): nothing to decode or trim
    bodies = [stored.body for stored in window]
    # From here on only tool messages follow, so tool results at the start of `new` continue this turn.
    trailing = len(bodies)
    while trailing > 0 and bodies[trailing - 1].get("role") == "tool":
        trailing -= 1
    continues = bool(new) and new[0].get("role") == "tool"
    sendable = []
    for index, stored in enumerate(window):
        if continues and index >= trailing - 1:
            sendable.append(stored)  # the turn in progress: its tool results are in this request
            continue
        body = answered_only(stored.body, _answered_ids(bodies, index + 1))
        if body is stored.body:
            sendable.append(stored)
        elif body is not None:
            sendable.append(
                StoredMessage(
                    stored.seq, body, stored.tokens, stored.turn_start_seq, stored.turn_start_tokens
                )
            )
    return sendable
