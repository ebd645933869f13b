"""What a chat turn is charged: its budget reservation before the call, an estimate when no usage comes.

See estimates.py for the counts and budgets.py for the reservations; this module applies them to a turn.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from gateway.budgets import Budgets
from gateway.config import Settings
from gateway.estimates import chat_prompt_tokens, completion_allowance, estimated_usage
from gateway.exchange import PendingTurn
from gateway.offload import THREAD_THRESHOLD, run_sized
from gateway.pricing import Usage
from gateway.tokens import needs_loading


def request_size(turn: PendingTurn) -> int:
    """About how many bytes of JSON a turn's request body makes (to decide on a worker thread).

    When counting its tokens would first build the model's encoding, it counts as big: that build
    belongs off the event loop too.
    """
    if needs_loading(turn.model):
        return THREAD_THRESHOLD + 1
    return len(turn.call.raw) + 4 * sum(m.tokens for m in turn.history)


def dump_body(body: dict[str, Any]) -> bytes:
    """The upstream request body as JSON bytes."""
    return json.dumps(body, ensure_ascii=False).encode()


def body_with_usage(body: dict[str, Any]) -> bytes:
    """The body as JSON, with `stream_options.include_usage` set (the upstream then reports usage)."""
    options = dict(body.get("stream_options") or {})
    options["include_usage"] = True
    return dump_body({**body, "stream_options": options})


class TurnCharges:
    """Reserves a turn's share of its key's budget, and estimates its usage when the upstream gives none."""

    def __init__(self, budgets: Budgets, settings: Settings) -> None:
        self.budgets = budgets
        self.reserve_tokens = settings.budget_reserve_tokens
        self.key_mode = settings.upstream_api_key is not None

    async def prompt_tokens(self, turn: PendingTurn) -> int:
        """The prompt tokens of the turn counted offline: stored history as stored, the rest counted now."""
        if turn.prompt_estimate is None:
            messages = turn.call.body.get("messages") or []
            if turn.call.conversation_id is not None:  # what the gateway composes, the stored history aside
                system = [*(turn.call.instructions or []), *(turn.system_messages or [])]
                messages = [*system, *turn.new]
            counted = await run_sized(
                request_size(turn), functools.partial(chat_prompt_tokens, messages, turn.model)
            )
            stored = sum(m.tokens for m in turn.history) + turn.summary_sent_tokens
            turn.prompt_estimate = counted + stored
        return turn.prompt_estimate

    async def reserve(self, turn: PendingTurn) -> None:
        """Reserve the call's prompt and completion allowance against its key's budget (429 when spent)."""
        call = turn.call
        if call.budget_pusd is None:
            return
        allowance = completion_allowance(call.body, self.reserve_tokens)
        usage = Usage(prompt_tokens=await self.prompt_tokens(turn), completion_tokens=allowance)
        turn.reservation = await self.budgets.reserve(
            call.owner, call.key_name, call.budget_pusd, turn.model, usage
        )

    async def estimate(self, turn: PendingTurn, payload: Any, generated: str) -> Any:
        """`payload` with an estimated usage when it has none, in key mode (the attempt is marked estimated).

        A usage object the upstream did send but that cannot be read (counts out of range) stays: it is
        recorded as null, not replaced by a guess. In pass-through mode callers pay the upstream
        themselves: their log shows what it reported.
        """
        if not self.key_mode or (isinstance(payload, dict) and payload.get("usage") is not None):
            return payload
        prompt = await self.prompt_tokens(turn)
        usage = estimated_usage(prompt, generated, turn.model)
        turn.estimated = True
        estimate = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}
        return {**(payload if isinstance(payload, dict) else {}), "usage": estimate}
