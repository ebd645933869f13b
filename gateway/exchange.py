"""The data of one chat turn (request, pending state, replies) and the pure helpers around it.

Pure: no I/O and no I/O library at run time. The httpx, SQLAlchemy and store types its fields and arguments
name are imported for type checking only; the modules that use them (turns, replays, store) do the I/O.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from gateway import headers as h
from gateway.errors import InvalidRequest
from gateway.history import Budget, StoredMessage, unanswered_tool_results

if TYPE_CHECKING:
    import httpx
    from sqlalchemy import Connection

    from gateway.replays import Recorded
    from gateway.store.conversations import SummaryState, TurnWrite
    from gateway.store.database import OpenTurn
    from gateway.store.tables import Conversation

CHAT_ENDPOINT = "/v1/chat/completions"
# Runs inside a stored turn's transaction, after its messages: (connection, the write, the completion).
StoreHook: TypeAlias = "Callable[[Connection, TurnWrite, Any], None]"


@dataclass(frozen=True)
class ChatCall:
    """A parsed chat-completions request, as the handler hands it over."""

    owner: str
    token: str
    conversation_id: str | None
    body: dict[str, Any]
    raw: bytes
    headers: dict[str, str]
    request_id: str
    header_budget: Budget = field(default_factory=Budget)
    retry_count: int = 0
    idempotency_key: str | None = None
    key_name: str | None = None
    budget_pusd: int | None = None  # the key's budget, when it has one: the call reserves its share
    header_strategy: str | None = None  # X-History-Strategy, validated
    # Used by the Responses API (all optional, so chat requests are unchanged):
    endpoint: str = CHAT_ENDPOINT  # the request log's endpoint
    instructions: list[dict[str, Any]] | None = None  # the system prompt of this turn only, never stored
    expected_turn: int | None = None  # continue only from this turn count, else ConversationMoved
    store: bool = True  # False: use the history, write nothing (the attempt is still logged)
    on_store: StoreHook | None = None


@dataclass
class Reply:
    """A complete response to send back."""

    status: int
    headers: dict[str, str]
    body: bytes


async def _nothing_held() -> None:
    """The close of a stream that holds nothing (a recorded answer replayed)."""


@dataclass
class StreamReply:
    """A streamed response: status and headers now, body events as they come.

    `close` releases what the stream holds (the upstream response, the conversation) and logs it as a
    disconnect if it never ended, even when `events` never started (an async generator that never ran
    skips its `finally`): the response that sends it calls `close` once sending is over. Idempotent.
    """

    status: int
    headers: dict[str, str]
    events: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]] = _nothing_held


@dataclass
class PendingTurn:
    """What the gateway knows about a turn while its upstream call runs."""

    call: ChatCall
    started: float
    conversation: Conversation | None = None
    system_messages: list[dict[str, Any]] | None = None
    replace_system: bool = False
    new: list[dict[str, Any]] = field(default_factory=list)
    history: list[StoredMessage] = field(default_factory=list)
    dropped: int = 0
    ttfb_ms: float | None = None
    sent: float | None = None
    replay: Recorded | None = None
    usage_added: bool = False  # the gateway asked a stream for usage the client did not ask for
    reservation: int | None = None  # the budget reservation to release with the request-log row
    prompt_estimate: int | None = None  # the prompt tokens counted offline, once needed
    estimated: bool = False  # the recorded usage is the gateway's estimate, not the upstream's
    strategy: str | None = None  # the history strategy applied
    window_start: int | None = None  # the stable window's new start after a cut (None: unchanged)
    summary: SummaryState | None = None  # the summary sent (the stored one, or one folded in now)
    summary_changed: bool = False  # True when this turn folded a new summary in (stored with the turn)
    summary_sent_tokens: int = 0  # tokens of the summary message sent
    history_hash: str | None = None  # the stored history's digest, when the dedupe recomputed it
    opened: OpenTurn | None = None  # the held conversation and what was read for it

    @property
    def model(self) -> str | None:
        """The model the client asked for."""
        model = self.call.body.get("model")
        return model if isinstance(model, str) else None

    def history_headers(self) -> dict[str, str]:
        """Response headers that report what history was sent."""
        if self.call.conversation_id is None:
            return {}
        headers = {
            h.CONVERSATION_ID: self.call.conversation_id,
            h.HISTORY_MESSAGES: str(len(self.history)),
            h.HISTORY_DROPPED: str(self.dropped),
        }
        if self.strategy is not None:
            headers[h.HISTORY_STRATEGY] = self.strategy
            headers[h.HISTORY_SUMMARIZED] = str(self.summarized)
        return headers

    @property
    def summarized(self) -> int:
        """How many stored messages the summary sent covers (0 when none is sent)."""
        return self.summary.through if self.summary is not None else 0


def error_text(body: bytes) -> str:
    """The message of an upstream error body (or its first bytes), for the request log."""
    try:
        decoded = json.loads(body)
        message = decoded["error"]["message"]
        return str(message)[:2000]
    except (ValueError, KeyError, TypeError):
        return body[:2000].decode("utf-8", "replace")


def replay_reply(recorded: Recorded, body: dict[str, Any]) -> Reply | StreamReply:
    """The recorded response again: no upstream call, no new request-log row (so nothing is counted twice)."""
    if body.get("stream") is not True:
        headers, payload = recorded.plain()
        return Reply(200, headers, payload)
    headers, events = recorded.stream(client_wants_usage(body))

    async def replayed() -> AsyncIterator[bytes]:
        yield b"".join(events)

    return StreamReply(200, headers, replayed())


def upstream_request_id(response: httpx.Response | None) -> str | None:
    """The upstream's x-request-id, cut to the column's 200 characters."""
    if response is None:
        return None
    value = response.headers.get(h.REQUEST_ID)
    return value[:200] if value is not None else None


def check_tool_results_fit(turn: PendingTurn) -> None:
    """Refuse (400) tool results whose assistant tool call the budget left out: upstreams reject them."""
    unanswered = unanswered_tool_results([m.body for m in turn.history], turn.new)
    if unanswered:
        raise InvalidRequest(
            f"The tool result for call '{unanswered[0]}' continues a turn that the history budget left out "
            f"({turn.dropped} stored messages dropped), so its assistant tool call would not be sent. "
            "Raise X-Max-History-Messages / X-Max-History-Tokens (or the conversation's settings) "
            "so that the current turn fits.",
            param="messages",
            code="history_budget_too_small",
        )


def json_or_none(payload: bytes) -> Any:
    """The decoded JSON body, or None when it is not JSON (or nests too deep to decode)."""
    try:
        return json.loads(payload)
    except (ValueError, RecursionError):
        return None


def choice_message(parsed: Any) -> dict[str, Any] | None:
    """Choice 0's message of a chat completion, or None when the body is not one.

    A message whose content or refusal is neither a string nor null (an object, a number) is no
    assistant message either: it could not be sent back to the upstream as history.
    """
    if not isinstance(parsed, dict):
        return None
    choices = parsed.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    if not isinstance(message, dict):
        return None
    for name in ("content", "refusal"):
        if message.get(name) is not None and not isinstance(message[name], str):
            return None
    tool_calls = message.get("tool_calls")
    if tool_calls is not None and not (
        isinstance(tool_calls, list) and all(isinstance(call, dict) for call in tool_calls)
    ):
        return None
    return message


def client_wants_usage(body: dict[str, Any]) -> bool:
    """True when the client itself asked for the usage chunk of a stream."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
