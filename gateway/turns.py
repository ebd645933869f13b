"""One chat turn: lock, compose, forward, then store the turn or log the failed attempt."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import anyio
import httpx
from sqlalchemy import Connection

from gateway import headers as h
from gateway.attempts import AttemptRecord, StoredReply, attempt_record, returned_model
from gateway.budgets import Budgets
from gateway.charges import TurnCharges, body_with_usage, request_size
from gateway.composition import (
    adds_stream_usage,
    compose,
    history_budget,
    history_strategy,
)
from gateway.config import Settings
from gateway.dedupe import overlap_search_limit, stored_run_length
from gateway.errors import (
    BudgetExceeded,
    ConversationBusy,
    ConversationMoved,
    DatabaseUnavailable,
    GatewayError,
    UpstreamError,
    UpstreamProtocolError,
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
    StoredMessage,
    assistant_message,
    history_digest,
    new_messages,
    number_messages,
    select_window,
    split_system,
    turn_digests,
)
from gateway.lease import TurnLease
from gateway.metrics import Metrics
from gateway.money import PICODOLLARS_PER_USD as PUSD_PER_USD
from gateway.offload import run_sized
from gateway.pricing import Pricer, parse_usage
from gateway.relay import StreamFailed, StreamFailure, StreamFinished, StreamRelay
from gateway.replays import find_replay
from gateway.sse import DONE
from gateway.store.conversations import (
    LoadedTurn,
    TurnWrite,
    read_bodies,
    stored_summary,
)
from gateway.store.database import Database, OpenTurn
from gateway.store.spend import conversation_spent_pusd, release_budget
from gateway.store.tables import Conversation
from gateway.store.usage import insert_attempt
from gateway.summaries import Fold, Summarizer
from gateway.tokens import count_message_tokens, needs_loading
from gateway.upstream import UpstreamClient, read_body, response_headers, translate_errors
from gateway.window import load_summary_prompt, stable_window, summary_message

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
        self.budgets = Budgets(db, pricer)
        self.key_mode = settings.upstream_api_key is not None
        self.charges = TurnCharges(self.budgets, settings)
        prompt = load_summary_prompt(settings.summary_prompt_file)
        self.summarizer = Summarizer(db, upstream, settings, pricer, prompt, metrics=metrics)

    async def chat(self, call: ChatCall) -> Reply | StreamReply:
        """Handle one chat-completions request, stateful when it names a conversation."""
        turn = PendingTurn(call=call, started=time.monotonic())
        stream = call.body.get("stream") is True
        if call.conversation_id is None:
            body = call.raw
            if stream and self.key_mode and not client_wants_usage(call.body):
                # a key's stream must report its usage to be charged: ask for it, hide it from the client
                turn.usage_added = True
                body = await run_sized(len(call.raw), functools.partial(body_with_usage, call.body))
            return await self._forward(turn, body, stream=stream)
        lease = await TurnLease.acquire(
            self.db.open_turn(
                call.owner,
                call.conversation_id,
                wait=self.settings.lock_timeout,
                budget=BudgetRule(header=call.header_budget, default=self._default_budget()),
                anchored=lambda c: self._strategy(call, c) != "sliding",
                max_conversations=self.settings.max_conversations_per_caller,
            ),
            exit_waits=self.db.turn_exit_waits,
        )
        turn.opened = lease.held
        try:
            self.metrics.observe_lock_wait(turn.opened.waited)
            await self._prepare(turn)
            if turn.replay is not None:
                return replay_reply(turn.replay, call.body)
            body = await self._compose(turn)
            return await self._forward(turn, body, stream=stream, lease=lease)
        finally:  # the one release of a turn that did not become a stream (its generator owns that one)
            await lease.release_unless_handed_over()

    async def _prepare(self, turn: PendingTurn) -> None:
        call = turn.call
        assert call.conversation_id is not None and turn.opened is not None
        loaded = turn.opened.loaded
        conversation = loaded.conversation
        system, rest = split_system(call.body["messages"])
        turn.conversation = conversation
        turn.strategy = self._strategy(call, conversation)
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
            turn.replay = await self.db.run(
                functools.partial(
                    find_replay,
                    conversation=conversation,
                    request=rest,
                    retry_count=call.retry_count,
                    idempotency_key=call.idempotency_key,
                    window=self.settings.replay_window,
                    now=time.time(),
                )
            )
            if turn.replay is not None:
                return
        if call.expected_turn is not None and conversation.turn_count != call.expected_turn:
            raise ConversationMoved(
                f"Conversation '{conversation.id}' has moved past turn {call.expected_turn}."
            )
        await self._check_cost_cap(conversation)
        turn.new = await self._new_messages(turn, conversation, rest, loaded.candidates)
        budget = history_budget(call.header_budget, self._default_budget(), conversation)
        self._window(turn, conversation, loaded, budget)
        turn.dropped = conversation.message_count - len(turn.history)
        if turn.dropped and turn.new and turn.new[0].get("role") == "tool":
            check_tool_results_fit(turn)
        turn.summary = stored_summary(conversation)
        if turn.window_start is not None and turn.strategy == "summarize":  # a cut
            await self._fold(turn, conversation, turn.window_start)
        if turn.summary is not None:
            turn.summary_sent_tokens = await count_off_loop(summary_message(turn.summary.text), turn.model)

    def _window(
        self, turn: PendingTurn, conversation: Conversation, loaded: LoadedTurn, budget: Budget
    ) -> None:
        """Choose the history the turn replays, by its strategy; after a cut, the window's new start."""
        count, tokens = conversation.message_count, conversation.token_count
        if turn.strategy == "sliding":
            turn.history = select_window(loaded.candidates, budget, count, tokens)
            return
        plan = stable_window(
            loaded.candidates,
            budget,
            start=conversation.window_start,
            anchor=loaded.anchor,
            message_count=count,
            token_count=tokens,
            trim_to=self.settings.history_trim_to,
        )
        turn.history = plan.history
        turn.window_start = plan.start if plan.cut else None

    def _strategy(self, call: ChatCall, conversation: Conversation | None) -> str:
        return history_strategy(call, conversation, self.settings.history_strategy)

    async def _fold(self, turn: PendingTurn, conversation: Conversation, through: int) -> None:
        """At a cut under `summarize`: fold every stored message before the new start that the summary does
        not cover yet into it (the turn waits for the call; a failure keeps the previous summary)."""
        first = turn.summary.through if turn.summary is not None else 0
        model = conversation.summary_model or self.settings.summary_model or turn.model
        if first >= through or model is None:
            return
        bodies = await self.db.run(
            functools.partial(read_bodies, conversation_pk=conversation.pk, first=first, end=through)
        )
        previous = turn.summary.text if turn.summary is not None else None
        folded = await self.summarizer.fold(turn.call, Fold(previous, bodies, through, model), turn.model)
        if folded is not None:
            turn.summary, turn.summary_changed = folded, True

    async def _new_messages(
        self,
        turn: PendingTurn,
        conversation: Conversation,
        rest: list[dict[str, Any]],
        window: list[StoredMessage],
    ) -> list[dict[str, Any]]:
        """The request's messages without the leading ones already stored (see gateway/dedupe.py).

        The whole-history digest answers the common cases with no read; only a request of two or more
        messages that does not start with the whole history reads the newest stored messages (from the
        window when it holds them), at most as many as the request has.
        """
        count = conversation.message_count
        new = new_messages(rest, count, conversation.history_hash)
        limit = overlap_search_limit(len(rest), count)
        if len(new) < len(rest) or limit == 0:
            return new
        if len(window) >= limit and window[-1].seq == count - 1 and window[-limit].seq == count - limit:
            tail = [stored.body for stored in window[-limit:]]
        else:
            tail = await self.db.run(
                functools.partial(
                    read_bodies, conversation_pk=conversation.pk, first=count - limit, end=count
                )
            )
        stored = stored_run_length(rest, tail, count)
        if stored == count:  # the digest was made by an older comparison: the stored copy heals it
            turn.history_hash = history_digest(tail)
        return rest[stored:]

    async def _check_cost_cap(self, conversation: Conversation) -> None:
        """429 once the conversation's recorded cost reached its `max_cost_usd` (turns are serialized)."""
        if conversation.max_cost_pusd is None:
            return
        spent = await self.db.run(
            functools.partial(
                conversation_spent_pusd, owner=conversation.owner, conversation_id=conversation.id
            )
        )
        if spent >= conversation.max_cost_pusd:
            cap = Decimal(conversation.max_cost_pusd) / PUSD_PER_USD
            raise BudgetExceeded(
                f"Conversation '{conversation.id}' has reached its cost cap of {cap:f} USD (max_cost_usd); "
                "raise or clear the cap to continue it."
            )

    def _default_budget(self) -> Budget:
        return Budget(self.settings.max_history_messages, self.settings.max_history_tokens)

    async def _compose(self, turn: PendingTurn) -> bytes:
        """The upstream body (see composition.py); a big one is rendered off the event loop."""
        turn.usage_added = adds_stream_usage(turn.call.body)
        composition = compose(turn, cache_key=self.settings.prompt_cache_key)
        return await run_sized(request_size(turn), composition.render)

    async def _forward(
        self, turn: PendingTurn, body: bytes, *, stream: bool, lease: TurnLease[OpenTurn] | None = None
    ) -> Reply | StreamReply:
        call = turn.call
        headers = self.upstream.forward_headers(call.headers, call.token, identity_encoding=True)
        headers["content-type"] = "application/json"
        headers.pop("content-encoding", None)  # the body sent is the gateway's own, uncompressed
        await self.charges.reserve(turn)
        turn.sent = time.monotonic()
        try:
            response = await self.upstream.open("POST", self.upstream.chat_url, headers, body)
        except UpstreamError as exc:
            await self._log_failure(turn, exc.status_code, str(exc), None)
            raise
        except BaseException:  # the client left while the upstream was working: charge the prompt
            with anyio.CancelScope(shield=True):
                payload = await self.charges.estimate(turn, None, "")
                await self._log_failure(turn, 499, "client disconnected", None, payload)
            raise
        if stream and response.status_code == 200:
            reply_headers = response_headers(response) | turn.history_headers()
            relay = StreamRelay(max_bytes=self.settings.max_response_bytes, hide_usage=turn.usage_added)
            held = lease.hand_over() if lease is not None else None
            end = StreamEnd(relay, functools.partial(self._finish_stream, turn, response, relay, held))
            return StreamReply(200, reply_headers, self._relay(turn, response, relay, end), end.close)
        read = False
        try:
            payload = await read_body(response, self.settings.max_response_bytes)
            read = True
        except UpstreamError as exc:
            await self._log_failure(turn, exc.status_code, str(exc), response)
            raise
        except BaseException:
            with anyio.CancelScope(shield=True):
                estimate = await self.charges.estimate(turn, None, "")
                await self._log_failure(turn, 499, "client disconnected", response, estimate)
            raise
        finally:  # the whole body in, closing hands the connection back before it could be cancelled
            with contextlib.nullcontext() if read else anyio.CancelScope(shield=True):
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
        parsed = await run_sized(len(payload), functools.partial(json_or_none, payload))
        message = choice_message(parsed)
        if turn.call.conversation_id is not None and message is None:
            error = "The upstream answered with an invalid completion."
            await self._log_failure(turn, 502, error, response, parsed)
            raise UpstreamProtocolError("The upstream answered with something that is not a chat completion.")
        if turn.call.conversation_id is None or message is None:
            await self._log_failure(turn, response.status_code, None, response, parsed)
            return Reply(response.status_code, reply_headers, payload)
        try:
            await self._store_turn(turn, assistant_message(message), parsed, response, payload)
        except (UpstreamUnreachable, ConversationBusy) as exc:  # busy: fenced, the call is still logged
            await self._log_failure(turn, exc.status_code, str(exc), response, parsed)
            raise
        return Reply(response.status_code, reply_headers | turn.history_headers(), payload)

    def _rejected_caller(self, status: int) -> bool:
        """In pass-through mode a token the upstream rejects is no caller at all: record nothing for it."""
        return self.settings.upstream_api_key is None and status in (401, 403)

    async def _relay(
        self, turn: PendingTurn, response: httpx.Response, relay: StreamRelay, end: StreamEnd
    ) -> AsyncIterator[bytes]:
        """Forward events as they arrive (see relay.py); store the turn, then the held finish and [DONE]."""
        try:
            with translate_errors():
                async for chunk in response.aiter_raw():
                    if turn.ttfb_ms is None:
                        turn.ttfb_ms = (time.monotonic() - turn.started) * 1000
                    # decoding a huge event is no work for the event loop (see offload.py)
                    out = await run_sized(relay.pending + len(chunk), functools.partial(relay.feed, chunk))
                    if out:
                        yield out
                    if relay.done:
                        break
        except UpstreamError as exc:
            relay.fail(StreamFailure.of(exc))
        except BaseException:
            relay.fail(StreamFailure(499, "client disconnected"))
            raise
        finally:  # stored or logged, the upstream closed and the conversation released, even on disconnect
            last = await end()
        yield last

    async def _finish_stream(
        self,
        turn: PendingTurn,
        response: httpx.Response,
        relay: StreamRelay,
        lease: TurnLease[OpenTurn] | None,
    ) -> bytes:
        """A stream's end (see StreamEnd): the turn stored or logged, then the conversation released."""
        try:
            return await self._end_stream(turn, response, relay)
        finally:
            if lease is not None:
                await lease.release()

    async def _end_stream(self, turn: PendingTurn, response: httpx.Response, relay: StreamRelay) -> bytes:
        """Store the finished turn or log the failed one; the stream's last bytes ([DONE] or the error)."""
        try:
            outcome = relay.outcome()
            if isinstance(outcome, StreamFinished):
                try:
                    await self._store_stream_turn(turn, outcome, response)
                except (
                    GatewayError
                ) as exc:  # broad: any failure to store (database, lock, text) fails the turn
                    relay.fail(StreamFailure.of(exc))
                else:
                    return outcome.held + DONE
            failed = relay.outcome()
            assert isinstance(failed, StreamFailed)
            failure = failed.failure
            with contextlib.suppress(
                GatewayError
            ):  # broad: logging a failed stream must not replace its failure
                payload = await self.charges.estimate(turn, failed.reported, failed.generated)
                await self._log_failure(turn, failure.status, failure.message, response, payload)
            return failure.event()
        finally:
            with contextlib.suppress(httpx.HTTPError, OSError):
                await response.aclose()

    async def _store_stream_turn(
        self, turn: PendingTurn, finished: StreamFinished, response: httpx.Response
    ) -> None:
        completion = await self.charges.estimate(turn, finished.completion, finished.generated)
        if turn.call.conversation_id is None:
            await self._log_failure(turn, 200, None, response, completion)
            return
        await self._store_turn(turn, assistant_message(finished.message), completion, response, None)

    def _attempt(
        self,
        turn: PendingTurn,
        status: int,
        error: str | None,
        response: httpx.Response | None,
        payload: Any,
        stored: StoredReply | None = None,
    ) -> AttemptRecord:
        """The turn's request-log record, now (the clock is read here; `turn_attempt` is pure)."""
        return turn_attempt(
            turn,
            self.pricer,
            status=status,
            error=error,
            upstream_request_id=upstream_request_id(response),
            payload=payload,
            latency_ms=(time.monotonic() - turn.started) * 1000,
            created_at=time.time(),
            stored=stored,
        )

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
        attempt = self._attempt(turn, status, error, response, payload)
        self._observe(turn, attempt)
        reservation, turn.reservation = turn.reservation, None

        def record(connection: Connection) -> None:
            insert_attempt(connection, attempt)
            release_budget(connection, reservation)

        try:
            await self.db.run(record)
        except DatabaseUnavailable as exc:
            log.warning("request not logged (status %s): %s", status, exc)

    def _observe(self, turn: PendingTurn, attempt: AttemptRecord) -> None:
        """Count an attempt in the metrics: upstream latency, tokens and cost (even if storing it fails)."""
        if turn.sent is not None:
            self.metrics.observe_upstream(CHAT_ENDPOINT, time.monotonic() - turn.sent)
        self.metrics.observe_attempt(attempt)

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

        def number() -> tuple[Any, str, str]:
            counts = [count_message_tokens(m, model) for m in bodies]
            numbered = number_messages(
                bodies,
                counts,
                next_seq=conversation.message_count if conversation else 0,
                token_total=conversation.token_count if conversation else 0,
                last_user_seq=conversation.last_user_seq if conversation else 0,
                last_user_tokens=conversation.last_user_tokens if conversation else 0,
            )
            base = turn.history_hash or (conversation.history_hash if conversation else "")
            return numbered, *turn_digests(bodies, len(turn.new), base)

        try:
            # big turns, and the first count that builds its encoding, run off the event loop
            size = request_size(turn) + len(raw or b"")
            numbered, digest, request_print = await run_sized(size, number)
        except UnicodeEncodeError:  # a lone UTF-16 surrogate: text that cannot be stored or sent again
            message = "The upstream answered with text that is not valid Unicode."
            raise UpstreamProtocolError(message) from None
        turn_number = (conversation.turn_count if conversation else 0) + 1
        if raw is not None:
            response_body = raw.decode("utf-8", "replace")
        else:
            response_body = await run_sized(size, functools.partial(json.dumps, completion))
        stored = StoredReply(turn_number, request_print, response_body)
        attempt = self._attempt(turn, response.status_code, None, response, completion, stored)
        write = TurnWrite(
            owner=call.owner,
            conversation_id=call.conversation_id,
            system_messages=turn.system_messages,
            replace_system=turn.replace_system,
            messages=numbered,
            turn=turn_number,
            history_digest=digest,
            now=time.time(),
            window_start=turn.window_start,
            summary=turn.summary if turn.summary_changed else None,
        )
        hook, reservation = call.on_store, turn.reservation
        extra: Callable[[Connection], None] | None = None
        if hook is not None or reservation is not None:  # written in the same transaction as the turn

            def extra(connection: Connection) -> None:
                release_budget(connection, reservation)  # the key's reservation: its cost is now recorded
                if hook is not None:
                    hook(connection, write, completion)  # the Responses API's row

        assert turn.opened is not None
        try:
            await turn.opened.store(write, attempt, extra=extra)
        except ConversationBusy:  # fenced, nothing written: the caller logs (and counts) the call, once
            raise
        except BaseException:
            self._observe(turn, attempt)  # counted even when storing it failed
            raise
        self._observe(turn, attempt)
        turn.reservation = None


class StreamEnd:
    """The one end of a streamed turn: stored or logged, the upstream closed, the conversation released.

    It runs once, shielded: from the stream's generator, or from `close` (the response is over) when the
    generator never got there, as when the client left before the body was first iterated: a generator
    that never started skips its `finally`.
    """

    def __init__(self, relay: StreamRelay, finish: Callable[[], Awaitable[bytes]]) -> None:
        self._relay = relay
        self._finish = finish
        self.ended = False

    async def __call__(self) -> bytes:
        """Run the end, once; the stream's last bytes ([DONE] or the error event; nothing after the first)."""
        if self.ended:
            return b""
        self.ended = True
        with anyio.CancelScope(shield=True):
            last = await self._finish()
        return last

    async def close(self) -> None:
        """The response is over: a stream that has not ended (or never started) ends as a disconnect."""
        if not self.ended:
            self._relay.fail(StreamFailure(499, "client disconnected"))
            await self()


def turn_attempt(
    turn: PendingTurn,
    pricer: Pricer,
    *,
    status: int,
    error: str | None,
    upstream_request_id: str | None,
    payload: Any,
    latency_ms: float,
    created_at: float,
    stored: StoredReply | None = None,
) -> AttemptRecord:
    """The request-log record of a chat turn's upstream call, from the turn and what the upstream answered."""
    call = turn.call
    usage = parse_usage(payload)
    response_model = returned_model(payload)
    # Calls without a conversation carry no stored history: 0, so their history cost is a true 0.
    history_tokens = sum(m.tokens for m in turn.history)
    # A full replay would have sent the stored messages left out instead of the summary.
    stored_tokens = turn.conversation.token_count if turn.conversation is not None else 0
    left_out = stored_tokens - history_tokens - turn.summary_sent_tokens
    # Prices and reports use the model the upstream says it ran (e.g. the dated name).
    cost = pricer.cost(response_model or turn.model, usage, history_tokens, left_out_tokens=left_out)
    return attempt_record(
        owner=call.owner,
        conversation_id=call.conversation_id,
        request_id=call.request_id,
        upstream_request_id=upstream_request_id,
        endpoint=call.endpoint,
        model=turn.model or None,
        response_model=response_model,
        stream=call.body.get("stream") is True,
        status=status,
        error=error,
        latency_ms=latency_ms,
        ttfb_ms=turn.ttfb_ms,
        usage=usage,
        cost=cost,
        history_tokens=history_tokens,
        history_messages=len(turn.history),
        history_strategy=turn.strategy,
        history_summarized=turn.summarized if turn.strategy is not None else None,
        idempotency_key=call.idempotency_key,
        created_at=created_at,
        estimated=turn.estimated,
        stored=stored,
    )


async def count_off_loop(message: dict[str, Any], model: str | None) -> int:
    """A message's token count; the first count for an encoding builds it, which is not for the event loop."""
    if needs_loading(model):
        return await anyio.to_thread.run_sync(lambda: count_message_tokens(message, model))
    return count_message_tokens(message, model)


__all__ = ["StreamEnd", "TurnService", "count_off_loop", "turn_attempt"]
