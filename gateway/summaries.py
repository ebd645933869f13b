"""Summary calls: fold what a cut dropped into a conversation's running summary (the `summarize` strategy).

A summary call is a plain chat-completions call to the same upstream with the turn's credentials. It is
logged as a request-log row of its own (kind `summary`), so its cost counts for the conversation and the
caller's key budget. A failure (an error status, a transport error, a timeout, an empty answer) is logged
too and returns None: the turn then goes ahead with the previous summary, and the next cut folds in
everything not yet summarized.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from gateway.attempts import AttemptRecord, attempt_record, returned_model
from gateway.config import Settings
from gateway.errors import DatabaseUnavailable, UpstreamError
from gateway.exchange import ChatCall, choice_message, error_text, json_or_none, upstream_request_id
from gateway.history import content_text
from gateway.metrics import Metrics
from gateway.pricing import Pricer, parse_usage
from gateway.store.conversations import SummaryState
from gateway.store.database import Database
from gateway.store.usage import insert_attempt
from gateway.tokens import count_message_tokens, needs_loading
from gateway.upstream import UpstreamClient, read_body
from gateway.window import summary_message, summary_request

log = logging.getLogger("gateway.summaries")
SUMMARY_KIND = "summary"


@dataclass(frozen=True)
class Fold:
    """One summary call to make: the summary so far, the messages to fold in, and what it will cover."""

    previous: str | None
    messages: Sequence[dict[str, Any]]
    through: int  # stored messages the new summary covers
    model: str


@dataclass
class _Outcome:
    status: int
    error: str | None = None
    payload: Any = None
    response: Any = None
    text: str | None = None


class Summarizer:
    """Makes summary calls and records each one in the request log."""

    def __init__(
        self,
        db: Database,
        upstream: UpstreamClient,
        settings: Settings,
        pricer: Pricer,
        prompt: str,
        *,
        metrics: Metrics,
    ) -> None:
        self.db = db
        self.upstream = upstream
        self.settings = settings
        self.pricer = pricer
        self.prompt = prompt
        self.metrics = metrics

    async def fold(self, call: ChatCall, fold: Fold, turn_model: str | None) -> SummaryState | None:
        """Run one summary call; the new summary, or None when the call failed (it is logged either way)."""
        started = time.monotonic()
        outcome = await self._call(call, fold)
        attempt = self._attempt(call, fold, outcome, started)
        self.metrics.observe_upstream("/v1/chat/completions", time.monotonic() - started)
        self.metrics.observe_attempt(attempt)
        # In pass-through mode a token the upstream rejects is no caller: nothing is recorded for it.
        rejected = self.settings.upstream_api_key is None and outcome.status in (401, 403)
        try:
            if not rejected:
                await self.db.run(functools.partial(insert_attempt, record=attempt))
        except DatabaseUnavailable as exc:
            log.warning("summary call not logged: %s", exc)
        if outcome.text is None:
            log.warning("summary call failed (%s): %s", outcome.status, outcome.error)
            return None
        message = summary_message(outcome.text)
        if needs_loading(turn_model):  # the first count for an encoding builds it: not on the event loop
            tokens = await anyio.to_thread.run_sync(lambda: count_message_tokens(message, turn_model))
        else:
            tokens = count_message_tokens(message, turn_model)
        return SummaryState(outcome.text, tokens, fold.through, time.time())

    async def _call(self, call: ChatCall, fold: Fold) -> _Outcome:
        body = {"model": fold.model, "messages": summary_request(self.prompt, fold.previous, fold.messages)}
        headers = self.upstream.forward_headers(call.headers, call.token, identity_encoding=True)
        headers["content-type"] = "application/json"
        content = json.dumps(body, ensure_ascii=False).encode()
        outcome = _Outcome(status=0)
        try:
            with anyio.fail_after(self.settings.summary_timeout):
                response = await self.upstream.open("POST", self.upstream.chat_url, headers, content)
                outcome.response = response
                try:
                    payload = await read_body(response, self.settings.max_response_bytes)
                finally:
                    await response.aclose()
        except TimeoutError:
            outcome.status, outcome.error = 504, "The summary call timed out (GATEWAY_SUMMARY_TIMEOUT)."
            return outcome
        except UpstreamError as exc:
            outcome.status, outcome.error = exc.status_code, str(exc)
            return outcome
        outcome.status = response.status_code
        outcome.payload = json_or_none(payload)
        if not 200 <= response.status_code < 300:
            outcome.error = error_text(payload)
            return outcome
        message = choice_message(outcome.payload)
        text = content_text(message.get("content")).strip() if message is not None else ""
        if not text:
            outcome.status, outcome.error = 502, "The summary call answered no text."
            return outcome
        outcome.text = text
        return outcome

    def _attempt(self, call: ChatCall, fold: Fold, outcome: _Outcome, started: float) -> AttemptRecord:
        payload = outcome.payload
        usage = parse_usage(payload)
        response_model = returned_model(payload)
        # A summary call is no part of a full replay: its full-replay cost is 0 (left_out_tokens=None).
        cost = self.pricer.cost(response_model or fold.model, usage, 0, left_out_tokens=None)
        return attempt_record(
            owner=call.owner,
            conversation_id=call.conversation_id,
            request_id=call.request_id,
            upstream_request_id=upstream_request_id(outcome.response),
            endpoint="/v1/chat/completions",
            model=fold.model,
            response_model=response_model,
            status=outcome.status,
            error=outcome.error,
            latency_ms=(time.monotonic() - started) * 1000,
            usage=usage,
            cost=cost,
            kind=SUMMARY_KIND,
            created_at=time.time(),
        )
