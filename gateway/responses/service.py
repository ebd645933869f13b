"""The stateful Responses API over chat completions: where a response continues, forks and retries.

A stored response is one turn of a conversation, run by the chat turn pipeline (TurnService), so the
lock, history limits, dedupe, usage, cost and budgets are the chat turn's. This module decides which
conversation a response belongs to:
- `previous_response_id` continues that response's conversation when the response is its latest turn;
  otherwise the turn forks: a new conversation holding the history up to that response;
- `conversation` names the conversation (created when missing);
- neither: a new conversation (its id derived from the Idempotency-Key when there is one, so a retry
  lands in the same conversation and is answered from the record).
The response row is written in the turn's own transaction, so a follow-up sent the instant a response
completed finds it (on every replica).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from gateway import headers as h
from gateway.config import Settings
from gateway.errors import ConversationMoved, NotFound
from gateway.exchange import ChatCall, Reply, StoreHook, StreamReply, json_or_none
from gateway.history import (
    Budget,
    StoredMessage,
    compose_messages,
    history_digest,
    new_messages,
    split_system,
    trim_history,
)
from gateway.items import message_items
from gateway.replays import IDEMPOTENCY_WINDOW_SECONDS
from gateway.responses.events import ResponseEvents, encode, replay_events
from gateway.responses.output import ResponseContext, completed_response, failed_response
from gateway.responses.request import ResponsesRequest
from gateway.sse import SseSplitter
from gateway.store.conversations import TurnWrite, get_conversation
from gateway.store.database import Database
from gateway.store.responses import (
    find_retried,
    fork_conversation,
    get_response,
    insert_response,
    read_prefix,
)
from gateway.store.tables import Conversation, StoredResponse
from gateway.turns import TurnService
from gateway.unanswered import sendable_history

ENDPOINT = "/v1/responses"
SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
JSON_HEADERS = {"content-type": "application/json"}
_NOT_PASSED = frozenset({"content-type", "content-length", "content-encoding", "transfer-encoding"})


@dataclass(frozen=True)
class ResponsesCall:
    """A parsed `POST /v1/responses`, as the handler hands it over."""

    owner: str
    token: str
    request: ResponsesRequest
    request_hash: str
    headers: dict[str, str]
    request_id: str
    header_budget: Budget = dataclasses.field(default_factory=Budget)
    retry_count: int = 0
    idempotency_key: str | None = None
    header_strategy: str | None = None  # X-History-Strategy, validated
    key_name: str | None = None
    budget_pusd: int | None = None  # the key's budget, when it has one: each chat call reserves its share


@dataclass
class Outcome:
    """What the handler sends: a JSON body, or a stream of SSE bytes."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    events: AsyncIterator[bytes] | None = None
    close: Callable[[], Awaitable[None]] | None = None  # releases what `events` holds, even if never started


@dataclass
class _State:
    ctx: ResponseContext
    stored: dict[str, Any] | None = None


def request_hash(body: dict[str, Any]) -> str:
    """A digest of a request body (key order aside): a retry sends the same one."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "replace")).hexdigest()


def previous_not_found(response_id: str) -> NotFound:
    """The 404 for a previous_response_id this caller has no stored response for."""
    return NotFound(
        f"Previous response with id '{response_id}' not found.",
        param="previous_response_id",
        code="previous_response_not_found",
    )


def _source(connection: Connection, owner: str, previous: StoredResponse) -> Conversation:
    """A unit-of-work step: the conversation `previous` was stored in (404 when it is gone)."""
    source = get_conversation(connection, owner, previous.conversation_id)
    if source is None:
        raise previous_not_found(previous.id)
    return source


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _passed_headers(headers: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in headers.items() if key.lower() not in _NOT_PASSED}


class _Finishing:
    """A stream that calls `done` once it has ended or been closed (even if it never started)."""

    def __init__(self, events: AsyncIterator[bytes], done: Callable[[], None]) -> None:
        self.events = events
        self.done = done

    def __aiter__(self) -> _Finishing:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await anext(self.events)
        except BaseException:
            self.done()
            raise

    async def aclose(self) -> None:
        """Close the inner stream, then report the end."""
        try:
            closer = getattr(self.events, "aclose", None)
            if closer is not None:
                await closer()
        finally:
            self.done()


class ResponseService:
    """Creates responses as conversation turns through the chat turn pipeline."""

    def __init__(self, db: Database, turns: TurnService, settings: Settings) -> None:
        self.db = db
        self.turns = turns
        self.settings = settings
        # Requests running in this process, by (caller, body digest): a retry of one waits for it.
        self._running: dict[tuple[str, str], asyncio.Event] = {}

    async def create(self, call: ResponsesCall) -> Outcome:
        """Handle one `POST /v1/responses`.

        A retry (`x-stainless-retry-count` >= 1) of a request this process is still running waits for it
        (at most GATEWAY_LOCK_TIMEOUT) and then gets its stored answer; across processes that needs the
        conversation's lock (a continuation) or an Idempotency-Key.
        """
        key = (call.owner, call.request_hash)
        running = self._running.get(key)
        if running is not None and call.retry_count >= 1 and call.request.store:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(running.wait(), self.settings.lock_timeout)
        if not call.request.store or key in self._running:
            return await self._create(call)
        finished = self._running[key] = asyncio.Event()

        def done() -> None:
            if self._running.get(key) is finished:
                del self._running[key]
            finished.set()

        try:
            outcome = await self._create(call)
        except BaseException:
            done()
            raise
        if outcome.events is None:
            done()
        else:
            outcome.events = _Finishing(outcome.events, done)
        return outcome

    async def _create(self, call: ResponsesCall) -> Outcome:
        request = call.request
        retried = await self._retried(call)
        if retried is not None:
            return self._stored_outcome(retried, request.stream, {h.GATEWAY_REPLAYED: "true"})
        previous: StoredResponse | None = None
        conversation_id: str | None
        if request.previous_response_id is not None:
            previous = await self.db.run(
                functools.partial(get_response, owner=call.owner, response_id=request.previous_response_id)
            )
            if previous is None:
                raise previous_not_found(request.previous_response_id)
            conversation_id = previous.conversation_id
        elif request.conversation_id is not None:
            conversation_id = request.conversation_id  # checked by parse_request (or the handler)
        elif request.store:
            conversation_id = self._new_conversation_id(call, "")
        else:
            conversation_id = None  # stateless: nothing to read, nothing to write
        echoed = conversation_id if request.store or request.conversation_id else None
        state = _State(ResponseContext(f"resp_{secrets.token_hex(24)}", int(time.time()), request, echoed))
        expected = previous.turn if previous is not None else None
        try:
            reply = await self.turns.chat(self._chat_call(call, state, conversation_id, expected))
        except ConversationMoved:
            if previous is None:
                raise
            reply = await self._fork(call, state, previous)
        return await self._outcome(call, state, reply)

    def _new_conversation_id(self, call: ResponsesCall, parent: str) -> str:
        """A fresh conversation id; with an Idempotency-Key, the same one for every retry of the request."""
        if call.idempotency_key is None:
            return f"conv_{secrets.token_hex(24)}"
        seed = f"{call.owner}\n{call.idempotency_key}\n{parent}".encode()
        return "conv_" + hashlib.sha256(seed).hexdigest()[:48]

    async def _retried(self, call: ResponsesCall) -> StoredResponse | None:
        """The stored response of an earlier try of this very request (SDK retry or Idempotency-Key)."""
        if not call.request.store or (call.retry_count < 1 and call.idempotency_key is None):
            return None
        window = (
            IDEMPOTENCY_WINDOW_SECONDS if call.idempotency_key is not None else self.settings.replay_window
        )
        return await self.db.run(
            functools.partial(
                find_retried,
                owner=call.owner,
                request_hash=call.request_hash,
                idempotency_key=call.idempotency_key,
                since=time.time() - window,
            )
        )

    def _chat_call(
        self, call: ResponsesCall, state: _State, conversation_id: str | None, expected_turn: int | None
    ) -> ChatCall:
        request = call.request
        instructions = request.instruction_messages()
        messages = request.messages
        if conversation_id is None:  # a stateless call is sent as composed here
            messages = [*(instructions or []), *messages]
            instructions = None
        body = request.chat_body(messages)
        stored = request.store and conversation_id is not None
        return ChatCall(
            owner=call.owner,
            token=call.token,
            conversation_id=conversation_id,
            body=body,
            raw=_json(body),
            headers=call.headers,
            request_id=call.request_id,
            header_budget=call.header_budget,
            header_strategy=call.header_strategy,
            retry_count=call.retry_count if stored else 0,
            idempotency_key=call.idempotency_key if stored else None,
            endpoint=ENDPOINT,
            instructions=instructions,
            expected_turn=expected_turn,
            store=request.store,
            on_store=self._store_hook(call, state) if stored else None,
            key_name=call.key_name,
            budget_pusd=call.budget_pusd,
        )

    def _store_hook(self, call: ResponsesCall, state: _State) -> StoreHook:
        def store(connection: Connection, write: TurnWrite, completion: Any) -> None:
            final = completed_response(state.ctx, completion, int(time.time()))
            new = write.messages[:-1]
            items = [item for message in new for item in message_items(message.seq, message.body)]
            insert_response(
                connection,
                {
                    "owner": call.owner,
                    "id": state.ctx.id,
                    "conversation_id": write.conversation_id,
                    "turn": write.turn,
                    "message_end": write.messages[-1].seq + 1,
                    "previous_response_id": call.request.previous_response_id,
                    "request_hash": call.request_hash,
                    "idempotency_key": call.idempotency_key,
                    "body": json.dumps(final, ensure_ascii=False),
                    "input_items": json.dumps(items, ensure_ascii=False),
                    "created_at": time.time(),
                },
            )
            state.stored = final

        return store

    async def _fork(
        self, call: ResponsesCall, state: _State, previous: StoredResponse
    ) -> Reply | StreamReply:
        """Continue from a response that is no longer its conversation's latest turn."""
        if not call.request.store:
            return await self._from_prefix(call, state, previous)
        fork_id = self._new_conversation_id(call, previous.id)

        def unit(connection: Connection) -> None:
            if get_conversation(connection, call.owner, fork_id) is None:
                source = _source(connection, call.owner, previous)
                fork_conversation(
                    connection, source, fork_id, previous.message_end, previous.turn, time.time()
                )

        async with self.db.locks.hold(call.owner, fork_id, self.settings.lock_timeout):
            await self.db.run(unit)
        state.ctx = dataclasses.replace(state.ctx, conversation_id=fork_id)
        return await self.turns.chat(self._chat_call(call, state, fork_id, None))

    async def _from_prefix(
        self, call: ResponsesCall, state: _State, previous: StoredResponse
    ) -> Reply | StreamReply:
        """store: false from an older response: its history, composed here and sent statelessly."""
        request = call.request

        def unit(connection: Connection) -> tuple[Conversation, list[StoredMessage]]:
            source = _source(connection, call.owner, previous)
            return source, read_prefix(connection, source, previous.message_end)

        source, stored = await self.db.run(unit)

        def first(*values: int | None) -> int | None:
            return next((v for v in values if v is not None), None)

        budget = Budget(
            max_messages=first(
                call.header_budget.max_messages,
                source.max_history_messages,
                self.settings.max_history_messages,
            ),
            max_tokens=first(
                call.header_budget.max_tokens, source.max_history_tokens, self.settings.max_history_tokens
            ),
        )
        system, rest = split_system(request.messages)
        if not system and source.system_messages:
            system = json.loads(source.system_messages)
        system = [*(request.instruction_messages() or []), *system]
        new = new_messages(rest, len(stored), history_digest(m.body for m in stored))
        history = sendable_history(trim_history(stored, budget), new)
        body = request.chat_body(compose_messages(system, history, new))
        state.ctx = dataclasses.replace(state.ctx, conversation_id=None)
        chat = ChatCall(
            owner=call.owner,
            token=call.token,
            conversation_id=None,
            body=body,
            raw=_json(body),
            headers=call.headers,
            request_id=call.request_id,
            endpoint=ENDPOINT,
            key_name=call.key_name,
            budget_pusd=call.budget_pusd,
        )
        return await self.turns.chat(chat)

    async def _outcome(self, call: ResponsesCall, state: _State, reply: Reply | StreamReply) -> Outcome:
        headers = _passed_headers(reply.headers)
        if isinstance(reply, Reply) and not 200 <= reply.status < 300:
            return Outcome(reply.status, headers | JSON_HEADERS, reply.body)  # the upstream's error, as is
        if reply.headers.get(h.GATEWAY_REPLAYED) == "true":  # the turn pipeline recognized a retry
            found = await self.db.run(
                functools.partial(
                    find_retried,
                    owner=call.owner,
                    request_hash=call.request_hash,
                    idempotency_key=call.idempotency_key,
                    since=time.time() - IDEMPOTENCY_WINDOW_SECONDS,
                )
            )
            if found is not None:
                if isinstance(reply, StreamReply):
                    with contextlib.suppress(AttributeError):
                        await reply.events.aclose()  # type: ignore[attr-defined]
                    await reply.close()
                return self._stored_outcome(found, call.request.stream, headers)
        if isinstance(reply, Reply):
            final = state.stored or completed_response(state.ctx, json_or_none(reply.body), int(time.time()))
            return Outcome(200, headers | JSON_HEADERS, _json(final))
        events = self._relay(state, reply.events)
        return Outcome(200, headers | SSE_HEADERS, events=events, close=reply.close)

    def _stored_outcome(self, stored: StoredResponse, stream: bool, headers: dict[str, str]) -> Outcome:
        final = json.loads(stored.body)
        headers = {**headers, h.CONVERSATION_ID: stored.conversation_id}
        if not stream:
            return Outcome(200, headers | JSON_HEADERS, stored.body.encode())

        async def replayed() -> AsyncIterator[bytes]:
            yield b"".join(encode(event) for event in replay_events(final))

        return Outcome(200, headers | SSE_HEADERS, events=replayed())

    async def _relay(self, state: _State, chat_events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Chat SSE from the turn pipeline in, Responses events out; the end is the stored object."""
        machine = ResponseEvents(state.ctx)
        splitter = SseSplitter()
        ended = False
        yield b"".join(encode(event) for event in machine.start())
        try:
            async for chunk in chat_events:
                out = []
                for event in splitter.feed(chunk):
                    if ended:
                        break
                    if event.is_done:
                        completion = machine.assembler.completion()
                        final = state.stored or completed_response(state.ctx, completion, int(time.time()))
                        out += machine.finish(final)
                        ended = True
                        continue
                    payload = event.json()
                    error = payload.get("error") if isinstance(payload, dict) else None
                    if error is not None:
                        out += self._failed(state, machine, error)
                        ended = True
                        continue
                    out += machine.feed(payload)
                if out:
                    yield b"".join(encode(event) for event in out)
            if not ended:
                yield b"".join(encode(event) for event in self._failed(state, machine, None))
        finally:
            closer = getattr(chat_events, "aclose", None)
            if closer is not None:
                await closer()

    def _failed(self, state: _State, machine: ResponseEvents, error: Any) -> list[dict[str, Any]]:
        message = error.get("message") if isinstance(error, dict) else None
        text = message if isinstance(message, str) and message else "The upstream stream failed."
        failed = failed_response(
            state.ctx, text, output=machine.partial_output(), usage=machine.assembler.usage
        )
        return machine.fail(failed)
