"""Safe retries: recognize a request that asks again for a stored turn and render its recorded response.

A client whose turn was stored but whose answer was lost (a read timeout, a dropped connection) retries with
the same body. That retry is answered from the request log instead of becoming a second turn when either

- it carries an `Idempotency-Key` that names a stored turn of this caller's conversation from the last 24 h
  (the same key with different new messages is a 400 `idempotency_key_reused`), or
- it carries no key, `x-stainless-retry-count` >= 1, the conversation's newest request-log row is its last
  stored turn, recorded within GATEWAY_RETRY_REPLAY_WINDOW, and the request asks for that turn again.

"Asks for that turn again" means: the request's non-system messages equal the turn's new messages (a client
that sends only the new message), or end with them after exactly the history stored before the turn (a
client that resends the whole history) or, for the last turn, after a window of it that the dedupe would
recognize (a client that trims the history itself).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from gateway import headers as h
from gateway.dedupe import stored_run_length
from gateway.errors import IdempotencyKeyReused
from gateway.history import fingerprint, history_digest
from gateway.sse import replay_events
from gateway.store.conversations import messages_before_turn, stored_range, turn_messages
from gateway.store.tables import Attempt, Conversation
from gateway.store.usage import keyed_turn, latest_attempt

IDEMPOTENCY_WINDOW_SECONDS = 24 * 3600.0
Message = dict[str, Any]


@dataclass(frozen=True)
class Recorded:
    """A stored turn's response as the request log recorded it."""

    conversation_id: str
    response_body: str
    history_messages: int | None
    upstream_request_id: str | None
    history_dropped: int | None = None
    history_strategy: str | None = None
    history_summarized: int | None = None

    def plain(self) -> tuple[dict[str, str], bytes]:
        """Headers and body of the recorded response, for a non-streaming request."""
        return self._headers("application/json"), self.response_body.encode()

    def stream(self, include_usage: bool) -> tuple[dict[str, str], list[bytes]]:
        """Headers and SSE events that replay the recorded response, for a streaming request."""
        events = replay_events(json.loads(self.response_body), include_usage)
        headers = self._headers("text/event-stream; charset=utf-8") | {"cache-control": "no-cache"}
        return headers, events

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {
            "content-type": content_type,
            h.CONVERSATION_ID: self.conversation_id,
            h.GATEWAY_REPLAYED: "true",
        }
        if self.history_messages is not None:
            headers[h.HISTORY_MESSAGES] = str(self.history_messages)
        if self.history_dropped is not None:
            headers[h.HISTORY_DROPPED] = str(self.history_dropped)
        if self.history_strategy is not None:
            headers[h.HISTORY_STRATEGY] = self.history_strategy
            headers[h.HISTORY_SUMMARIZED] = str(self.history_summarized or 0)
        if self.upstream_request_id:
            headers[h.REQUEST_ID] = self.upstream_request_id
        return headers


def asks_again(request: Sequence[Message], stored_turn: Sequence[Message], history_hash: str | None) -> bool:
    """True when a request's non-system messages ask for the stored turn (its new messages, then its reply).

    `history_hash` is the conversation's digest when the turn is its last one: a whole-history request must
    then equal the stored history without the reply; for an older turn only the tail is compared.
    """
    new = list(stored_turn[:-1])
    if not new or len(request) < len(new) or fingerprint(request[-len(new) :]) != fingerprint(new):
        return False
    if len(request) == len(new) or history_hash is None:
        return True
    return history_digest([*request, stored_turn[-1]]) == history_hash


def find_replay(
    connection: Connection,
    conversation: Conversation,
    request: Sequence[Message],
    *,
    retry_count: int,
    idempotency_key: str | None,
    window: float,
    now: float,
) -> Recorded | None:
    """A unit of work: the recorded response this request asks for again, or None when it is a new turn."""
    if idempotency_key is not None:
        since = now - IDEMPOTENCY_WINDOW_SECONDS
        attempt = keyed_turn(connection, conversation.owner, conversation.id, idempotency_key, since)
        if attempt is None:
            return None
        if _same_turn(connection, conversation, attempt, request):
            return _recorded(connection, conversation, attempt)
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used for a different turn of this conversation; "
            "use a new key for a new message.",
            param="Idempotency-Key",
        )
    if retry_count < 1:
        return None
    attempt = latest_attempt(connection, conversation.owner, conversation.id)
    if (
        attempt is None
        or attempt.turn != conversation.turn_count
        or attempt.response_body is None
        or attempt.created_at < now - window
    ):
        return None
    if not _same_turn(connection, conversation, attempt, request):
        return None
    return _recorded(connection, conversation, attempt)


def _same_turn(
    connection: Connection, conversation: Conversation, attempt: Attempt, request: Sequence[Message]
) -> bool:
    if attempt.fingerprint is not None and fingerprint(request) == attempt.fingerprint:
        return True  # the common case, without reading the turn back
    if len(request) < 2 or attempt.turn is None:
        return False
    stored = turn_messages(connection, conversation, attempt.turn)
    last = attempt.turn == conversation.turn_count
    if asks_again(request, stored, conversation.history_hash if last else None):
        return True
    return last and _resends_a_window(connection, conversation, attempt.turn, request, stored)


def _resends_a_window(
    connection: Connection,
    conversation: Conversation,
    turn: int,
    request: Sequence[Message],
    stored_turn: Sequence[Message],
) -> bool:
    """True when the request is the turn's new messages after a window of the history stored before it.

    The window is what the dedupe would recognize then: a run ending at the last message before the turn
    that holds a whole turn (a client such as llama-index that trims the history itself).
    """
    new = list(stored_turn[:-1])
    window = list(request[: len(request) - len(new)])
    if not new or len(window) < 2 or fingerprint(request[len(window) :]) != fingerprint(new):
        return False
    before = messages_before_turn(connection, conversation, turn)
    if before is None or before < len(window):
        return False
    tail = stored_range(connection, conversation, before - len(window), before)
    return stored_run_length(window, tail, before) == len(window)


def _recorded(connection: Connection, conversation: Conversation, attempt: Attempt) -> Recorded:
    """The recorded response, with the original turn's X-History-Dropped (stored before it, minus sent)."""
    assert attempt.conversation_id is not None and attempt.response_body is not None
    dropped = None
    if attempt.history_messages is not None and attempt.turn is not None:
        before = messages_before_turn(connection, conversation, attempt.turn)
        dropped = None if before is None else max(0, before - attempt.history_messages)
    return Recorded(
        conversation_id=attempt.conversation_id,
        response_body=attempt.response_body,
        history_messages=attempt.history_messages,
        upstream_request_id=attempt.upstream_request_id,
        history_dropped=dropped,
        history_strategy=attempt.history_strategy,
        history_summarized=attempt.history_summarized,
    )
