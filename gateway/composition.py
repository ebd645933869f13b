"""Pure: the history budget and strategy a turn runs under, and the upstream request it composes.

`TurnService` decides with these and does the I/O around them (reading the history, offloading the render
of a big body); nothing here reads the clock, the database or the network.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from gateway.exchange import ChatCall, PendingTurn, client_wants_usage
from gateway.history import Budget, BudgetRule, StoredMessage, compose_body
from gateway.store.conversations import conversation_budget
from gateway.store.tables import Conversation
from gateway.unanswered import sendable_history
from gateway.window import summary_message


def history_budget(header: Budget, default: Budget, conversation: Conversation) -> Budget:
    """The turn's history budget: the request's headers, else the conversation's settings, else `default`."""
    return conversation_budget(BudgetRule(header=header, default=default), conversation)


def history_strategy(call: ChatCall, conversation: Conversation | None, default: str) -> str:
    """The history strategy: the request's header, else the conversation's setting, else `default`."""
    if call.header_strategy is not None:
        return call.header_strategy
    if conversation is not None and conversation.history_strategy is not None:
        return conversation.history_strategy
    return default


def adds_stream_usage(body: dict[str, Any]) -> bool:
    """True when the gateway must ask a stream for usage the client did not ask for (then hidden)."""
    return body.get("stream") is True and not client_wants_usage(body)


@dataclass(frozen=True)
class Composition:
    """A turn's upstream request before it is rendered: the client's fields, then the messages in order."""

    fields: dict[str, Any]
    system: list[dict[str, Any]]
    history: list[StoredMessage]
    new: list[dict[str, Any]]

    def render(self) -> bytes:
        """The JSON body (see history.compose_body); CPU work proportional to the body's size."""
        return compose_body(self.fields, self.system, self.history, self.new)


def compose(turn: PendingTurn, *, cache_key: bool) -> Composition:
    """The upstream request: the client's dict with `messages` replaced and usage requested for streams.

    The system prompt goes first (this turn's own instructions, then any stored one), then the summary
    of what the window left out, the sendable history and the new messages. `cache_key`
    (GATEWAY_PROMPT_CACHE_KEY) adds the conversation's `prompt_cache_key` unless the client sent one.
    """
    call = turn.call
    fields = dict(call.body)
    system = list(turn.system_messages or [])
    if call.instructions is not None:  # this turn's own system prompt, then any it sent to store
        system = [*call.instructions, *(system if turn.replace_system else [])]
    if turn.summary is not None:
        system.append(summary_message(turn.summary.text))  # right after the (stored) system prompt
    history = sendable_history(turn.history, turn.new)
    if cache_key and "prompt_cache_key" not in fields:
        fields["prompt_cache_key"] = prompt_cache_key(call.owner, call.conversation_id or "")
    if fields.get("stream") is True:
        options = dict(fields.get("stream_options") or {})
        options["include_usage"] = True
        fields["stream_options"] = options
    return Composition(fields, system, history, turn.new)


def prompt_cache_key(owner: str, conversation_id: str) -> str:
    """The `prompt_cache_key` of a conversation (GATEWAY_PROMPT_CACHE_KEY): a hash of caller and id."""
    return hashlib.sha256(f"{owner}\n{conversation_id}".encode()).hexdigest()


__all__ = [
    "Composition",
    "adds_stream_usage",
    "compose",
    "history_budget",
    "history_strategy",
    "prompt_cache_key",
]
