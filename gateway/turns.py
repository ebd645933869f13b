"""One chat turn: lock, compose, forward, then store the turn or log the failed attempt."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import anyio
import httpx
from sqlalchemy import Connection

from gateway import headers as h
from gateway.config import Settings
from gateway.errors import (
    BudgetExceeded,
    ConversationBusy,
    ConversationMoved,
    DatabaseUnavailable,
    GatewayError,
    UpstreamUnreachable,
)
from gateway.exchange import (
    ChatCall,
    PendingTurn,
    Reply,
    StreamReply,
    check_tool_results_fit,
    choice_message,
    client_wants_usage,
    error_text,
    json_or_none,
    replay_reply,
    upstream_request_id,
)
from gateway.history import (
    Budget,
    BudgetRule,
    assistant_message,
    compose_body,
    fingerprint,
    history_digest,
    new_messages,
    number_messages,
    select_window,
    split_system,
)
from gateway.keys import PUSD_PER_USD
from gateway.metrics import Metrics
from gateway.pricing import Pricer, parse_usage, usage_columns
from gateway.replays import find_replay
from gateway.sse import (
    DONE,
    SseSplitter,
    StreamAssembler,
    data_only,
    error_event,
    has_finish_reason,
    is_usage_only,
)
from gateway.store.conversations import TurnWrite, conversation_budget
from gateway.store.database import Database
from gateway.store.spend import conversation_spent_pusd
from gateway.store.tables import Conversation
from gateway.store.usage import insert_attempt
from gateway.tokens import count_message_tokens, needs_loading
from gateway.upstream import UpstreamClient, read_body, response_headers, translate_errors

CHAT_PATH = "/chat/completions"
CHAT_ENDPOINT = "/v1/chat/completions"  # the upstream-latency label of chat calls
log = logging.getLogger("gateway.turns")


class TurnService:
    """Runs chat turns against the upstream and the store."""

    def __init__(
        self, db: Database, upstream: UpstreamClient, settings: Settings, pricer: Pricer, *, metrics: Metrics
    ) -> None:
        self.db = db
        self.upstream = upstream
        self.settings = settings
        self.pricer = pricer
        self.metrics = metrics

    async def chat(self, call: ChatCall) -> Reply | StreamReply:
        """Handle one chat-completions request, stateful when it names a conversation."""
        turn = PendingTurn(call=call, started=time.monotonic())
        if call.conversation_id is None:
            return await self._forward(turn, call.raw, stream=call.body.get("stream") is True)
        stack = contextlib.AsyncExitStack()
        rule = BudgetRule(header=call.header_budget, default=self._default_budget())
        turn.opened = await stack.enter_async_context(
            self.db.open_turn(call.owner, call.conversation_id, wait=self.settings.lock_timeout, budget=rule)
        )
        try:
            self.metrics.lock_wait.observe(turn.opened.waited)
            await self._prepare(turn)
            if turn.replay is not None:
                await stack.aclose()
                return replay_reply(turn.replay, call.body)
            body = self._compose(turn)
            reply = await self._forward(turn, body, stream=call.body.get("stream") is True, stack=stack)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stack.aclose()
            raise
        if isinstance(reply, Reply):
            await stack.aclose()
        return reply

    async def _prepare(self, turn: PendingTurn) -> None:
        call = turn.call
        assert call.conversation_id is not None and turn.opened is not None
        conversation, candidates = turn.opened.conversation, turn.opened.candidates
        system, rest = split_system(call.body["messages"])
        turn.conversation = conversation
        turn.replace_system = bool(system)
        if system:
            turn.system_messages = system
        elif conversation is not None and conversation.system_messages:
            turn.system_messages = json.loads(conversation.system_messages)
        if conversation is None:
            if call.expected_turn is not None:
                raise ConversationMoved(f"Conversation '{call.conversation_id}' no longer exists.")
            turn.new = rest
            return
        if call.retry_count >= 1 or call.idempotency_key is not None:
            async with self.db.transaction() as session:
                turn.replay = await find_replay(
                    session,
                    conversation,
                    rest,
                    retry_count=call.retry_count,
                    idempotency_key=call.idempotency_key,
                    window=self.settings.replay_window,
                    now=time.time(),
                )
            if turn.replay is not None:
                return
        if call.expected_turn is not None and conversation.turn_count != call.expected_turn:
            raise ConversationMoved(
                f"Conversation '{conversation.id}' has moved past turn {call.expected_turn}."
            )
        await self._check_cost_cap(conversation)
        turn.new = new_messages(rest, conversation.message_count, conversation.history_hash)
        budget = self._budget(call.header_budget, conversation)
        turn.history = select_window(candidates, budget, conversation.message_count, conversation.token_count)
        turn.dropped = conversation.message_count - len(turn.history)
        if turn.dropped and turn.new and turn.new[0].get("role") == "tool":
            check_tool_results_fit(turn)

    async def _check_cost_cap(self, conversation: Conversation) -> None:
        """429 once the conversation's recorded cost reached its `max_cost_usd` (turns are serialized)."""
        if conversation.max_cost_pusd is None:
            return
        async with self.db.transaction() as session:
            spent = await conversation_spent_pusd(session, conversation.owner, conversation.id)
        if spent >= conversation.max_cost_pusd:
            cap = Decimal(conversation.max_cost_pusd) / PUSD_PER_USD
            raise BudgetExceeded(
                f"Conversation '{conversation.id}' has reached its cost cap of {cap:f} USD (max_cost_usd); "
                "raise or clear the cap to continue it."
            )

    def _default_budget(self) -> Budget:
        return Budget(self.settings.max_history_messages, self.settings.max_history_tokens)

    def _budget(self, header: Budget, conversation: Conversation) -> Budget:
        rule = BudgetRule(header=header, default=self._default_budget())
        return conversation_budget(rule, conversation)

    def _compose(self, turn: PendingTurn) -> bytes:
        """The upstream body: the client's dict with `messages` replaced and usage requested for streams."""
        body = dict(turn.call.body)
        system = turn.system_messages
        if turn.call.instructions is not None:  # this turn's own system prompt, then any it sent to store
            system = [*turn.call.instructions, *(system if turn.replace_system and system else [])]
        if body.get("stream") is True:
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            body["stream_options"] = options
        return compose_body(body, system, turn.history, turn.new)

    async def _forward(
        self, turn: PendingTurn, body: bytes, *, stream: bool, stack: contextlib.AsyncExitStack | None = None
    ) -> Reply | StreamReply:
        call = turn.call
        headers = self.upstream.forward_headers(call.headers, call.token, identity_encoding=True)
        headers["content-type"] = "application/json"
        turn.sent = time.monotonic()
        try:
            response = await self.upstream.open("POST", self.upstream.chat_url, headers, body)
        except GatewayError as exc:
            await self._log_failure(turn, exc.status_code, str(exc), None)
            raise
        if stream and response.status_code == 200:
            events = self._relay(turn, response, stack or contextlib.AsyncExitStack())
            reply_headers = response_headers(response) | turn.history_headers()
            return StreamReply(200, reply_headers, events)
        try:
            payload = await read_body(response, self.settings.max_response_bytes)
        except GatewayError as exc:
            await self._log_failure(turn, exc.status_code, str(exc), response)
            raise
        finally:
            await response.aclose()
        return await self._finish_plain(turn, response, payload)

    async def _finish_plain(self, turn: PendingTurn, response: httpx.Response, payload: bytes) -> Reply:
        reply_headers = response_headers(response)
        if not 200 <= response.status_code < 300:
            parsed = json_or_none(payload)
            if not self._rejected_caller(response.status_code):
                await self._log_failure(turn, response.status_code, error_text(payload), response, parsed)
            if turn.call.conversation_id is not None:
                reply_headers[h.CONVERSATION_ID] = turn.call.conversation_id
            return Reply(response.status_code, reply_headers, payload)
        parsed = json_or_none(payload)
        message = choice_message(parsed)
        if turn.call.conversation_id is not None and message is None:
            error = "The upstream answered with an invalid completion."
            await self._log_failure(turn, 502, error, response, parsed)
            raise UpstreamUnreachable("The upstream answered with something that is not a chat completion.")
        if turn.call.conversation_id is None or message is None:
            await self._log_failure(turn, response.status_code, None, response, parsed)
            return Reply(response.status_code, reply_headers, payload)
        try:
            await self._store_turn(turn, assistant_message(message), parsed, response, payload)
        except UpstreamUnreachable as exc:
            await self._log_failure(turn, exc.status_code, str(exc), response, parsed)
            raise
        return Reply(response.status_code, reply_headers | turn.history_headers(), payload)

    def _rejected_caller(self, status: int) -> bool:
        """In pass-through mode a token the upstream rejects is no caller at all: record nothing for it."""
        return self.settings.upstream_api_key is None and status in (401, 403)

    async def _relay(
        self, turn: PendingTurn, response: httpx.Response, stack: contextlib.AsyncExitStack
    ) -> AsyncIterator[bytes]:
        """Forward events as they arrive; hold back the finish until [DONE]; store the turn before [DONE]."""
        assembler = StreamAssembler()
        splitter = SseSplitter()
        wants_usage = client_wants_usage(turn.call.body)
        stateful = turn.call.conversation_id is not None
        held: list[bytes] = []
        finished = False
        failure: GatewayError | None = None
        size = 0
        try:
            with translate_errors():
                async for chunk in response.aiter_raw():
                    if turn.ttfb_ms is None:
                        turn.ttfb_ms = (time.monotonic() - turn.started) * 1000
                    size += len(chunk)
                    if size > self.settings.max_response_bytes:
                        limit = self.settings.max_response_bytes
                        raise UpstreamUnreachable(
                            f"The upstream stream exceeded the size limit of {limit} bytes "
                            "(GATEWAY_MAX_RESPONSE_BYTES)."
                        )
                    out = []
                    for event in splitter.feed(chunk):
                        if event.is_done:
                            finished = True
                            break
                        payload = event.json()
                        if payload is None and event.data is not None:
                            raise UpstreamUnreachable("The upstream sent a stream event that is not JSON.")
                        assembler.observe(payload)
                        if assembler.error is not None:
                            # the stream failed: no held finish chunk may reach the client, and the
                            # error goes out as a plain `data:` event, never `event: error`
                            held = []
                            out.append(data_only(event))
                            break
                        if stateful and is_usage_only(payload) and not wants_usage:
                            continue
                        if held or has_finish_reason(payload):
                            held.append(event.raw)
                        else:
                            out.append(event.raw)
                    if out:
                        yield b"".join(out)
                    if finished or assembler.error is not None:
                        break
            if assembler.error is not None:
                failure = GatewayError(str(assembler.error.get("message") or "upstream stream error"))
                failure.status_code = 502
            elif not finished:
                failure = UpstreamUnreachable("The upstream stream ended before [DONE].")
        except GatewayError as exc:
            failure = exc
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._close_stream(turn, response, stack, assembler, "client disconnected", 499)
            raise
        if failure is None:
            try:
                with anyio.CancelScope(shield=True):
                    await self._store_stream_turn(turn, assembler, response)
            except GatewayError as exc:
                failure = exc
            else:
                await self._close(response, stack)
                yield b"".join(held) + DONE
                return
        with anyio.CancelScope(shield=True):
            await self._close_stream(turn, response, stack, assembler, str(failure), failure.status_code)
        yield error_event(str(failure), failure.error_type, failure.code)

    async def _close(self, response: httpx.Response, stack: contextlib.AsyncExitStack) -> None:
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(httpx.HTTPError, OSError):
                await response.aclose()
            await stack.aclose()

    async def _close_stream(
        self,
        turn: PendingTurn,
        response: httpx.Response,
        stack: contextlib.AsyncExitStack,
        assembler: StreamAssembler,
        error: str,
        status: int,
    ) -> None:
        try:
            payload = {"usage": assembler.usage, "model": assembler.model}
            await self._log_failure(turn, status, error, response, payload)
        except GatewayError:
            pass
        finally:
            await self._close(response, stack)

    async def _store_stream_turn(
        self, turn: PendingTurn, assembler: StreamAssembler, response: httpx.Response
    ) -> None:
        completion = assembler.completion()
        if turn.call.conversation_id is None:
            await self._log_failure(turn, 200, None, response, completion)
            return
        await self._store_turn(turn, assistant_message(assembler.message()), completion, response, None)

    def _attempt_values(
        self, turn: PendingTurn, status: int, error: str | None, response: httpx.Response | None, payload: Any
    ) -> dict[str, Any]:
        call = turn.call
        usage = parse_usage(payload)
        returned = payload.get("model") if isinstance(payload, dict) else None
        response_model = returned if isinstance(returned, str) and returned else None
        # Calls without a conversation carry no stored history: 0, so their history cost is a true 0.
        history_tokens = sum(m.tokens for m in turn.history)
        # Prices and reports use the model the upstream says it ran (e.g. the dated name).
        cost = self.pricer.cost(response_model or turn.model, usage, history_tokens)
        return {
            "owner": call.owner,
            "conversation_id": call.conversation_id,
            "request_id": call.request_id,
            "upstream_request_id": upstream_request_id(response),
            "endpoint": call.endpoint,
            "model": turn.model[:200] if turn.model else None,
            "response_model": response_model[:200] if response_model else None,
            "stream": call.body.get("stream") is True,
            "status": status,
            "error": error,
            "latency_ms": (time.monotonic() - turn.started) * 1000,
            "ttfb_ms": turn.ttfb_ms,
            **usage_columns(usage, cost),
            "history_tokens": history_tokens,
            "history_messages": len(turn.history),
            "idempotency_key": call.idempotency_key,
            "created_at": time.time(),
        }

    async def _log_failure(
        self,
        turn: PendingTurn,
        status: int,
        error: str | None,
        response: httpx.Response | None,
        payload: Any = None,
    ) -> None:
        """Record an upstream call that added nothing to a conversation (failed, or stateless).

        Without a database the call is still answered (the upstream's reply or error), only not logged.
        """
        values = self._attempt_values(turn, status, error, response, payload)
        self._observe(turn, values)
        try:
            await self.db.run(functools.partial(insert_attempt, values=values))
        except DatabaseUnavailable as exc:
            log.warning("request not logged (status %s): %s", status, exc)

    def _observe(self, turn: PendingTurn, values: dict[str, Any]) -> None:
        """Count an attempt in the metrics: upstream latency, tokens and cost (even if storing it fails)."""
        if turn.sent is not None:
            self.metrics.observe_upstream(CHAT_ENDPOINT, time.monotonic() - turn.sent)
        self.metrics.observe_attempt(values)

    async def _store_turn(
        self,
        turn: PendingTurn,
        reply: dict[str, Any],
        completion: Any,
        response: httpx.Response,
        raw: bytes | None,
    ) -> None:
        """Store the new messages and the reply as one turn, with its attempt, in one transaction."""
        call = turn.call
        assert call.conversation_id is not None
        if not call.store:  # the history was used; nothing is written but the attempt
            await self._log_failure(turn, response.status_code, None, response, completion)
            return
        conversation = turn.conversation
        bodies = [*turn.new, reply]
        model = turn.model
        if needs_loading(model):  # the first count for this encoding builds it: not on the event loop
            counts = await anyio.to_thread.run_sync(lambda: [count_message_tokens(m, model) for m in bodies])
        else:
            counts = [count_message_tokens(m, model) for m in bodies]
        numbered = number_messages(
            bodies,
            counts,
            next_seq=conversation.message_count if conversation else 0,
            token_total=conversation.token_count if conversation else 0,
            last_user_seq=conversation.last_user_seq if conversation else 0,
            last_user_tokens=conversation.last_user_tokens if conversation else 0,
        )
        try:
            digest = history_digest(bodies, start=conversation.history_hash if conversation else "")
        except UnicodeEncodeError:  # a lone UTF-16 surrogate: text that cannot be stored or sent again
            raise UpstreamUnreachable("The upstream answered with text that is not valid Unicode.") from None
        turn_number = (conversation.turn_count if conversation else 0) + 1
        values = self._attempt_values(turn, response.status_code, None, response, completion)
        values["turn"] = turn_number
        values["fingerprint"] = fingerprint(turn.new)
        values["response_body"] = (
            raw.decode("utf-8", "replace") if raw is not None else json.dumps(completion)
        )
        self._observe(turn, values)
        assert turn.opened is not None
        write = TurnWrite(
            owner=call.owner,
            conversation_id=call.conversation_id,
            system_messages=turn.system_messages,
            replace_system=turn.replace_system,
            messages=numbered,
            turn=turn_number,
            history_digest=digest,
            now=time.time(),
        )
        hook = call.on_store
        extra: Callable[[Connection], None] | None = None
        if hook is not None:  # the Responses API's row, in the same transaction

            def extra(connection: Connection) -> None:
                hook(connection, write, completion)

        try:
            await turn.opened.store(write, values, extra=extra)
        except ConversationBusy as exc:  # fenced: the conversation moved on; the call is still logged
            await self._log_failure(turn, exc.status_code, str(exc), response, completion)
            raise


__all__ = ["TurnService"]
