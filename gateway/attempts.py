"""The request-log record: one typed value per upstream call, built by one function.

`attempt_record` is the one builder of an `AttemptRecord`: chat turns (through turns.turn_attempt), summary
calls and pass-through calls all go through it. The store writes a record as it is
(store/usage.py `attempt_row`), the metrics read its attributes. It is pure: the caller passes the clock
readings and the cost.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from gateway.money import to_picodollars
from gateway.pricing import CallCost, Usage

MODEL_LENGTH = 200  # the model columns' length


@dataclass(frozen=True)
class AttemptRecord:
    """One row of the request log (table `attempts`), as the gateway writes it."""

    owner: str
    conversation_id: str | None
    request_id: str
    upstream_request_id: str | None
    endpoint: str
    model: str | None
    response_model: str | None
    stream: bool
    status: int
    error: str | None
    latency_ms: float
    ttfb_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    cache_write_tokens: int | None
    cost_pusd: int | None
    history_cost_pusd: int | None
    full_replay_cost_pusd: int | None
    history_tokens: int | None
    history_messages: int | None
    history_strategy: str | None
    history_summarized: int | None
    idempotency_key: str | None
    created_at: float
    estimated: bool
    kind: str  # "call" (a client's request) or "summary" (the gateway's own summary call)
    turn: int | None  # the stored turn's number; None for a call that stored nothing
    fingerprint: str | None
    response_body: str | None  # a stored turn's reply, for replays


ATTEMPT_FIELDS = tuple(f.name for f in fields(AttemptRecord))


@dataclass(frozen=True)
class StoredReply:
    """What the request log keeps of a stored turn: its number, its request's fingerprint and the reply."""

    turn: int
    fingerprint: str
    response_body: str


def attempt_record(
    *,
    owner: str,
    conversation_id: str | None,
    request_id: str,
    endpoint: str,
    status: int,
    error: str | None,
    latency_ms: float,
    created_at: float,
    usage: Usage | None,
    cost: CallCost,
    model: str | None,
    response_model: str | None,
    stream: bool = False,
    upstream_request_id: str | None = None,
    ttfb_ms: float | None = None,
    history_tokens: int = 0,
    history_messages: int = 0,
    history_strategy: str | None = None,
    history_summarized: int | None = None,
    idempotency_key: str | None = None,
    estimated: bool = False,
    kind: str = "call",
    stored: StoredReply | None = None,
) -> AttemptRecord:
    """The request-log record of one call; usage and cost become their columns (all None without usage)."""
    return AttemptRecord(
        owner=owner,
        conversation_id=conversation_id,
        request_id=request_id,
        upstream_request_id=upstream_request_id,
        endpoint=endpoint,
        model=model[:MODEL_LENGTH] if model is not None else None,
        response_model=response_model[:MODEL_LENGTH] if response_model is not None else None,
        stream=stream,
        status=status,
        error=error,
        latency_ms=latency_ms,
        ttfb_ms=ttfb_ms,
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
        cached_tokens=usage.cached_tokens if usage else None,
        reasoning_tokens=usage.reasoning_tokens if usage else None,
        cache_write_tokens=usage.cache_write_tokens if usage else None,
        cost_pusd=to_picodollars(cost.cost_usd),
        history_cost_pusd=to_picodollars(cost.history_cost_usd),
        full_replay_cost_pusd=to_picodollars(cost.full_replay_cost_usd),
        history_tokens=history_tokens,
        history_messages=history_messages,
        history_strategy=history_strategy,
        history_summarized=history_summarized,
        idempotency_key=idempotency_key,
        created_at=created_at,
        estimated=estimated,
        kind=kind,
        turn=stored.turn if stored else None,
        fingerprint=stored.fingerprint if stored else None,
        response_body=stored.response_body if stored else None,
    )


def returned_model(payload: Any) -> str | None:
    """The model an answer says it ran (e.g. the dated name), or None."""
    returned = payload.get("model") if isinstance(payload, dict) else None
    return returned if isinstance(returned, str) and returned else None


__all__ = [
    "ATTEMPT_FIELDS",
    "AttemptRecord",
    "StoredReply",
    "attempt_record",
    "returned_model",
]
