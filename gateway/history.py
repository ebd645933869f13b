"""Pure history logic: system prompt, full-history dedupe, turn boundaries and budget trimming."""

from __future__ import annotations

import hashlib
import json
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


def _chain(digest: str, keys: Iterable[str]) -> str:
    for key in keys:
        digest = hashlib.sha256(f"{digest}\n{key}".encode()).hexdigest()
    return digest


def chain_hash(previous: str, message: Message) -> str:
    """Extend a running digest of a message sequence by one message."""
    return _chain(previous, (message_key(message),))


def history_digest(messages: Iterable[Message], start: str = "") -> str:
    """The running digest over a whole sequence of messages."""
    return _chain(start, map(message_key, messages))


def turn_digests(messages: Sequence[Message], new_count: int, start: str) -> tuple[str, str]:
    """A stored turn's two digests: the history's running digest extended by `messages` (from `start`), and
    the fingerprint of the first `new_count` of them (the request's new messages), each message's canonical
    key computed once for both."""
    keys = [message_key(message) for message in messages]
    return _chain(start, keys), _chain("turn", keys[:new_count])


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


class StoredMessage:
    """A stored message with its token count and trimming-turn start (seq and cumulative tokens).

    A message read back from the store keeps its stored JSON text: the turn splices that text into the
    upstream body as it is (`compose_body`), so replayed history is never decoded and encoded again. The
    body is decoded only if something reads it.
    """

    __slots__ = ("_body", "_json", "_role", "seq", "tokens", "turn_start_seq", "turn_start_tokens")

    def __init__(
        self, seq: int, body: Message | None, tokens: int, turn_start_seq: int, turn_start_tokens: int
    ) -> None:
        self.seq = seq
        self.tokens = tokens
        self.turn_start_seq = turn_start_seq
        self.turn_start_tokens = turn_start_tokens
        self._body = body
        self._json: str | None = None
        self._role: str | None = None

    @classmethod
    def from_json(
        cls, seq: int, text: str, role: str, tokens: int, turn_start_seq: int, turn_start_tokens: int
    ) -> StoredMessage:
        """A stored message as read back: its JSON text and role column, the body decoded on demand."""
        message = cls(seq, None, tokens, turn_start_seq, turn_start_tokens)
        message._json = text
        message._role = role
        return message

    @property
    def body(self) -> Message:
        """The message as a dict (decoded from the stored JSON on first use)."""
        if self._body is None:
            assert self._json is not None
            self._body = json.loads(self._json)
        return self._body

    @property
    def json(self) -> str:
        """The message as JSON text, in the form the gateway stores and sends it."""
        if self._json is None:
            self._json = json.dumps(self._body, ensure_ascii=False)
        return self._json

    @property
    def role(self) -> str | None:
        """The message's role."""
        if self._role is None and (self._body is not None or self._json is not None):
            role = self.body.get("role")
            self._role = role if isinstance(role, str) else None
        return self._role

    def _key(self) -> tuple[Any, ...]:
        return (self.seq, self.body, self.tokens, self.turn_start_seq, self.turn_start_tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StoredMessage) and self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # mutable body, like the dataclass it replaces

    def __repr__(self) -> str:
        return (
            f"StoredMessage(seq={self.seq}, body={self.body!r}, tokens={self.tokens}, "
            f"turn_start_seq={self.turn_start_seq}, turn_start_tokens={self.turn_start_tokens})"
        )


@dataclass(frozen=True)
class Budget:
    """History limits that apply to one turn; None means unlimited."""

    max_messages: int | None = None
    max_tokens: int | None = None

    @property
    def unlimited(self) -> bool:
        """True when no limit applies."""
        return self.max_messages is None and self.max_tokens is None


@dataclass(frozen=True)
class BudgetRule:
    """Which budget a turn gets: each limit from the request's headers, else the conversation's
    setting, else the server's default."""

    header: Budget = Budget()
    default: Budget = Budget()

    def resolve(self, setting: Budget) -> Budget:
        """The budget of a conversation whose own settings are `setting`."""

        def first(*values: int | None) -> int | None:
            return next((v for v in values if v is not None), None)

        return Budget(
            max_messages=first(self.header.max_messages, setting.max_messages, self.default.max_messages),
            max_tokens=first(self.header.max_tokens, setting.max_tokens, self.default.max_tokens),
        )


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
            if message.role == "user"
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


def compose_body(
    request: dict[str, Any],
    system: Sequence[Message] | None,
    window: Sequence[StoredMessage],
    new: Sequence[Message],
) -> bytes:
    """The upstream body: the request's fields, `messages` replaced by `compose_messages`' list.

    The same JSON as `json.dumps` of the composed dict (ensure_ascii off), but the stored messages are
    spliced in as their stored text instead of being decoded and encoded again.
    """
    placeholder = f"\x00gateway-messages-{id(request)}"
    fields = dict(request)
    fields["messages"] = placeholder
    outer = json.dumps(fields, ensure_ascii=False)
    parts = [json.dumps(m, ensure_ascii=False) for m in system or ()]
    parts += [m.json for m in window]
    parts += [json.dumps(m, ensure_ascii=False) for m in new]
    messages = "[" + ", ".join(parts) + "]"
    return outer.replace(json.dumps(placeholder), messages, 1).encode()


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
