"""Pure history logic: system prompt, full-history dedupe, turn boundaries and budget trimming."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.dedupe import message_key

Message = dict[str, Any]
SYSTEM_ROLES = frozenset({"system", "developer"})


def split_system(messages: Sequence[Message]) -> tuple[list[Message], list[Message]]:
    """Split a request's leading system/developer messages from the rest."""
    index = 0
    while index < len(messages) and messages[index].get("role") in SYSTEM_ROLES:
        index += 1
    return list(messages[:index]), list(messages[index:])


def system_prompt_text(system_messages: Sequence[Message] | None) -> str | None:
    """The system prompt as one string (text parts joined), for display; None when there is none."""
    if not system_messages:
        return None
    return "\n\n".join(content_text(message.get("content")) for message in system_messages)


def content_text(content: Any) -> str:
    """The text of a message content: a string, or the text parts of a list joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def chain_hash(previous: str, message: Message) -> str:
    """Extend a running digest of a message sequence by one message."""
    return hashlib.sha256(f"{previous}\n{message_key(message)}".encode()).hexdigest()


def history_digest(messages: Iterable[Message], start: str = "") -> str:
    """The running digest over a whole sequence of messages."""
    digest = start
    for message in messages:
        digest = chain_hash(digest, message)
    return digest


def new_messages(request_messages: Sequence[Message], stored_count: int, stored_digest: str) -> list[Message]:
    """Drop a leading copy of the whole stored history from the request's non-system messages."""
    if stored_count == 0 or len(request_messages) < stored_count:
        return list(request_messages)
    if history_digest(request_messages[:stored_count]) == stored_digest:
        return list(request_messages[stored_count:])
    return list(request_messages)


def fingerprint(messages: Sequence[Message]) -> str:
    """A digest of a turn's new messages, used to recognize a client's retry of the same turn."""
    return history_digest(messages, start="turn")


def assistant_message(message: Message) -> Message:
    """The assistant message to store from choice 0: role, content, and tool_calls/refusal when present."""
    stored: Message = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        stored["tool_calls"] = message["tool_calls"]
    if message.get("refusal") is not None:
        stored["refusal"] = message["refusal"]
    if message.get("name"):
        stored["name"] = message["name"]
    return stored


@dataclass(frozen=True)
class StoredMessage:
    """A stored message with its token count and trimming-turn start (seq and cumulative tokens)."""

    seq: int
    body: Message
    tokens: int
    turn_start_seq: int
    turn_start_tokens: int


@dataclass(frozen=True)
class Budget:
    """History limits that apply to one turn; None means unlimited."""

    max_messages: int | None = None
    max_tokens: int | None = None

    @property
    def unlimited(self) -> bool:
        """True when no limit applies."""
        return self.max_messages is None and self.max_tokens is None


def number_messages(
    bodies: Sequence[Message],
    tokens: Sequence[int],
    *,
    next_seq: int,
    token_total: int,
    last_user_seq: int,
    last_user_tokens: int,
) -> list[StoredMessage]:
    """Give new messages their seq and trimming-turn start, continuing a conversation's running state."""
    numbered = []
    for body, count in zip(bodies, tokens, strict=True):
        if body.get("role") == "user":
            last_user_seq, last_user_tokens = next_seq, token_total
        numbered.append(StoredMessage(next_seq, body, count, last_user_seq, last_user_tokens))
        next_seq += 1
        token_total += count
    return numbered


def window_bounds(budget: Budget, message_count: int, token_count: int) -> tuple[int, int]:
    """The smallest turn-start seq and cumulative-token values a message may have to be sent."""
    min_seq = 0 if budget.max_messages is None else message_count - budget.max_messages
    min_tokens = 0 if budget.max_tokens is None else token_count - budget.max_tokens
    return min_seq, min_tokens


def select_window(
    candidates: Sequence[StoredMessage], budget: Budget, message_count: int, token_count: int
) -> list[StoredMessage]:
    """Keep the longest suffix of whole turns within the budget (candidates are a suffix, oldest first).

    A turn is a user message and everything after it up to the next user message, so the result always
    starts with a user message and a tool result always travels with the assistant message that called it.
    """
    if budget.max_messages == 0 or budget.max_tokens == 0:
        return []
    min_seq, min_tokens = window_bounds(budget, message_count, token_count)
    start = next(
        (
            index
            for index, message in enumerate(candidates)
            if message.body.get("role") == "user"
            and message.turn_start_seq >= min_seq
            and message.turn_start_tokens >= min_tokens
        ),
        None,
    )
    if start is None:
        return []
    # Turn starts only grow along a conversation, so every later message belongs to a fitting turn.
    # Messages stored before the first user message belong to no turn and are never sent.
    return list(candidates[start:])


def compose_messages(
    system: Sequence[Message] | None, window: Sequence[StoredMessage], new: Sequence[Message]
) -> list[Message]:
    """The messages sent upstream: the system prompt (always), the budgeted history, the new messages."""
    return [*(system or []), *(m.body for m in window), *new]


def trim_history(stored: Sequence[StoredMessage], budget: Budget) -> list[StoredMessage]:
    """Apply a budget to a whole stored history (the reference the indexed query must agree with)."""
    token_count = sum(m.tokens for m in stored)
    return select_window(stored, budget, len(stored), token_count)


def unanswered_tool_results(history: Sequence[Message], new: Sequence[Message]) -> list[str]:
    """The tool_call_ids of new tool results whose assistant tool call is in neither `history` nor `new`."""
    called: set[str] = set()
    unanswered = []
    for message in [*history, *new]:
        calls = message.get("tool_calls") if message.get("role") == "assistant" else None
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, dict) and isinstance(call.get("id"), str):
                called.add(call["id"])
    for message in new:
        call_id = message.get("tool_call_id")
        if message.get("role") == "tool" and call_id not in called:
            unanswered.append(str(call_id))
    return unanswered
