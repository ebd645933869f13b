"""The request-log record: one builder, the store's row made from it without changing it."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

from gateway.attempts import ATTEMPT_FIELDS, AttemptRecord, StoredReply, attempt_record
from gateway.exchange import ChatCall, PendingTurn
from gateway.history import StoredMessage
from gateway.pricing import CallCost, Price, Pricer, Usage
from gateway.store.tables import ATTEMPTS, Conversation
from gateway.store.usage import attempt_row
from gateway.turns import turn_attempt

MINI = Price(input=D("0.15"), cached_input=D("0.075"), output=D("0.6"))
USAGE = Usage(prompt_tokens=1000, completion_tokens=500, cached_tokens=400)


def record(**changes: Any) -> AttemptRecord:
    fields: dict[str, Any] = {
        "owner": "o",
        "conversation_id": None,
        "request_id": "r",
        "endpoint": "/v1/chat/completions",
        "status": 200,
        "error": None,
        "latency_ms": 1.0,
        "created_at": 1.0,
        "model": "m",
        "response_model": None,
        "usage": None,
        "cost": CallCost(None, None),
    }
    return attempt_record(**(fields | changes))


def test_usage_and_cost_become_their_columns() -> None:
    pricer = Pricer({"gpt-4o-mini": MINI})
    cost = pricer.cost("gpt-4o-mini-2024-07-18", USAGE, history_tokens=600)
    built = attempt_record(
        owner="o",
        conversation_id="c",
        request_id="r",
        endpoint="/v1/chat/completions",
        status=200,
        error=None,
        latency_ms=1.0,
        created_at=1.0,
        usage=USAGE,
        cost=cost,
        model="gpt-4o-mini",
        response_model="gpt-4o-mini-2024-07-18",
    )
    columns = (
        built.prompt_tokens,
        built.completion_tokens,
        built.cached_tokens,
        built.reasoning_tokens,
        built.cache_write_tokens,
        built.cost_pusd,
        built.history_cost_pusd,
        built.full_replay_cost_pusd,
    )
    assert columns == (1000, 500, 400, 0, 0, 420_000_000, 72_000_000, 450_000_000)
    unpriced = record(usage=USAGE, cost=Pricer({}).cost("my-local-llama", USAGE, 10))
    assert unpriced.prompt_tokens == 1000 and unpriced.cost_pusd is None  # an unknown price is None, not 0


def test_no_usage_leaves_every_usage_column_empty_and_model_names_are_cut_to_fit() -> None:
    built = attempt_record(
        owner="o",
        conversation_id=None,
        request_id="r",
        endpoint="/v1/models",
        status=502,
        error="down",
        latency_ms=1.0,
        created_at=1.0,
        usage=None,
        cost=CallCost(None, None),
        model="m" * 300,
        response_model="",
    )
    assert built.prompt_tokens is None and built.cost_pusd is None and built.full_replay_cost_pusd is None
    assert built.model == "m" * 200 and built.response_model == ""
    assert (built.kind, built.estimated, built.turn, built.response_body) == ("call", False, None, None)


def test_the_row_has_every_column_the_gateway_writes_and_leaves_the_record_alone() -> None:
    written = record(error="bad\x00byte", upstream_request_id="x" * 300)
    row = attempt_row(written)
    assert set(row) == set(ATTEMPT_FIELDS)
    assert set(ATTEMPT_FIELDS) <= {column.name for column in ATTEMPTS.columns}
    assert row["error"] == "badbyte" and len(row["upstream_request_id"]) == 200
    assert written.error == "bad\x00byte"


def test_a_turns_record_counts_its_history_and_what_a_full_replay_would_have_sent() -> None:
    call = ChatCall(
        owner="o",
        token="t",
        conversation_id="c",
        body={"model": "gpt-4o-mini", "stream": True},
        raw=b"{}",
        headers={},
        request_id="r",
        idempotency_key="k",
    )
    history = [StoredMessage(3, {"role": "user", "content": "x"}, 600, 3, 0)]
    conversation = Conversation(token_count=1000)
    turn = PendingTurn(call=call, started=0.0, history=history, conversation=conversation, strategy="sliding")
    pricer = Pricer({"gpt-4o-mini": MINI})
    payload = {"model": "gpt-4o-mini-2024-07-18", "usage": {"prompt_tokens": 1000, "completion_tokens": 500}}
    stored = StoredReply(4, "f" * 64, "{}")
    built = turn_attempt(
        turn,
        pricer,
        status=200,
        error=None,
        upstream_request_id="u",
        payload=payload,
        latency_ms=5.0,
        created_at=7.0,
        stored=stored,
    )
    assert (built.model, built.response_model, built.stream) == (
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
        True,
    )
    assert (built.history_tokens, built.history_messages, built.history_strategy) == (600, 1, "sliding")
    assert (built.turn, built.fingerprint, built.response_body) == (4, "f" * 64, "{}")
    assert (built.idempotency_key, built.latency_ms, built.created_at) == ("k", 5.0, 7.0)
    cost = pricer.cost("gpt-4o-mini-2024-07-18", Usage(1000, 500), 600, left_out_tokens=400)
    assert built.full_replay_cost_pusd is not None
    assert (
        built.full_replay_cost_pusd
        == attempt_record(
            owner="o",
            conversation_id="c",
            request_id="r",
            endpoint="e",
            status=200,
            error=None,
            latency_ms=0,
            created_at=0,
            usage=Usage(1000, 500),
            cost=cost,
            model=None,
            response_model=None,
        ).full_replay_cost_pusd
    )
