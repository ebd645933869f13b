"""The bill of a summarized conversation against hand-computed figures, in process, on SQLite and Postgres.

The upstream is scripted: every turn reports 1,000 prompt tokens (400 cache reads, 100 cache writes in
OpenAI's `prompt_tokens_details`) and 50 completion tokens; every summary call 100 prompt tokens (20 cache
writes, Anthropic-style `cache_creation_input_tokens`) and 10 completion tokens. Prices (USD per 1M tokens):
input 1, cached input 0.1, cache write 1.25, output 2. So, in millionths of a USD:

- a turn costs 500 x 1 + 400 x 0.1 + 100 x 1.25 + 50 x 2 = 765;
- a summary call costs 80 x 1 + 20 x 1.25 + 10 x 2 = 125;
- a turn's full replay costs (1,000 + tokens left out - summary tokens sent) x 1 + 50 x 2.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from gateway.app import create_app
from gateway.config import Settings
from gateway.tokens import count_message_tokens
from gateway.window import MESSAGES_TO_FOLD, summary_message

MODEL = "house-model"
PRICES = {MODEL: {"input": 1, "cached_input": 0.1, "cache_write": 1.25, "output": 2}}
TURN_USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 50,
    "total_tokens": 1050,
    "prompt_tokens_details": {"cached_tokens": 400, "cache_write_tokens": 100},
}
SUMMARY_USAGE = {
    "prompt_tokens": 100,
    "completion_tokens": 10,
    "total_tokens": 110,
    "cache_creation_input_tokens": 20,
}
MILLIONTH = Decimal("0.000001")


def scripted_upstream(request: httpx.Request) -> httpx.Response:
    """A chat completion with the fixed usage of a turn or of a summary call."""
    body = json.loads(request.content)
    is_summary = MESSAGES_TO_FOLD in str(body["messages"][-1]["content"])
    content = "the summary" if is_summary else f"reply {len(body['messages'])}"
    payload = json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": MODEL,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": SUMMARY_USAGE if is_summary else TURN_USAGE,
        }
    ).encode()
    # a stream, as a network answer is (the gateway reads bodies with aiter_raw)
    return httpx.Response(200, headers={"content-type": "application/json"}, stream=httpx.ByteStream(payload))


@pytest.fixture
async def client(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES))
    settings = Settings(database_url=database_url, upstream_url="http://up/v1", prices_file=str(prices))
    app = create_app(settings, transport=httpx.MockTransport(scripted_upstream))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            yield http


async def test_summarized_conversation_bill(client: httpx.AsyncClient) -> None:
    token = f"sk-{secrets.token_hex(8)}"
    auth = {"Authorization": f"Bearer {token}"}
    headers = auth | {
        "X-Conversation-Id": "bill",
        "X-History-Strategy": "summarize",
        "X-Max-History-Messages": "4",
    }
    seen = []
    for n in range(1, 6):
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"message number {n}"}]}
        response = await client.post("/v1/chat/completions", headers=headers, json=body)
        assert response.status_code == 200, response.text
        seen.append(
            (int(response.headers["x-history-messages"]), int(response.headers["x-history-summarized"]))
        )
    # turn 4 finds 6 stored messages (over the limit of 4): it cuts to the newest turn and folds the 4 older
    assert seen == [(0, 0), (2, 0), (4, 0), (2, 4), (4, 4)]
    stored = (await client.get("/v1/conversations/bill/messages", headers=auth)).json()["data"]
    left_out = sum(
        count_message_tokens({"role": m["role"], "content": m["content"]}, MODEL) for m in stored[:4]
    )
    summary_sent = count_message_tokens(summary_message("the summary"), MODEL)
    full_replay = 5 * (1000 + 100) + 2 * (left_out - summary_sent)
    cost = 5 * 765 + 125

    usage = (await client.get("/v1/conversations/bill/usage", headers=auth)).json()
    assert usage["requests"] == 6
    assert usage["prompt_tokens"] == 5 * 1000 + 100 and usage["completion_tokens"] == 5 * 50 + 10
    assert usage["cached_tokens"] == 5 * 400 and usage["cache_write_tokens"] == 5 * 100 + 20
    assert usage["summary_tokens"] == 110
    assert Decimal(str(usage["summary_cost_usd"])) == 125 * MILLIONTH
    assert Decimal(str(usage["cost_usd"])) == cost * MILLIONTH
    assert Decimal(str(usage["full_replay_cost_usd"])) == full_replay * MILLIONTH
    assert Decimal(str(usage["saved_usd"])) == (full_replay - cost) * MILLIONTH

    conversation = (await client.get("/v1/conversations/bill", headers=auth)).json()
    assert conversation["summary"]["text"] == "the summary" and conversation["summary"]["through"] == 4
    assert conversation["usage"]["saved_usd"] == usage["saved_usd"]

    totals = (await client.get("/v1/usage", headers=auth)).json()
    assert totals["summary_tokens"] == 110 and totals["saved_usd"] == usage["saved_usd"]
    (row,) = (await client.get("/v1/usage?group_by=conversation", headers=auth)).json()["data"]
    assert row["key"] == "bill" and row["full_replay_cost_usd"] == usage["full_replay_cost_usd"]
    csv = (await client.get("/v1/usage?format=csv", headers=auth)).text.splitlines()
    header, values = csv[0].split(","), csv[1].split(",")
    cells = dict(zip(header, values, strict=True))
    assert cells["summary_tokens"] == "110" and cells["cache_write_tokens"] == "520"
    assert Decimal(cells["saved_usd"]) == (full_replay - cost) * MILLIONTH


async def test_stable_turns_without_summary_replay_what_they_left_out(client: httpx.AsyncClient) -> None:
    token = f"sk-{secrets.token_hex(8)}"
    auth = {"Authorization": f"Bearer {token}"}
    headers = auth | {"X-Conversation-Id": "plain", "X-Max-History-Messages": "2"}
    for n in range(1, 4):
        body: dict[str, Any] = {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"message number {n}"}],
        }
        response = await client.post("/v1/chat/completions", headers=headers, json=body)
        assert response.headers["x-history-strategy"] == "stable"
    stored = (await client.get("/v1/conversations/plain/messages", headers=auth)).json()["data"]
    tokens = [count_message_tokens({"role": m["role"], "content": m["content"]}, MODEL) for m in stored]
    # turn 3 found 4 stored messages over a limit of 2: the cut (to at most 1) kept none: all 4 left out
    full_replay = 3 * 1100 + sum(tokens[:4])
    usage = (await client.get("/v1/conversations/plain/usage", headers=auth)).json()
    assert usage["summary_tokens"] == 0 and Decimal(str(usage["summary_cost_usd"])) == 0
    assert Decimal(str(usage["full_replay_cost_usd"])) == full_replay * MILLIONTH


@pytest.fixture
async def held(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway holding the upstream key, with an admin key: callers use gateway keys with budgets."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES))
    settings = Settings(
        database_url=database_url,
        upstream_url="http://up/v1",
        prices_file=str(prices),
        upstream_api_key="sk-upstream",
        admin_key="admin-secret",
        key_cache_seconds=0,
    )
    app = create_app(settings, transport=httpx.MockTransport(scripted_upstream))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            yield http


async def test_summary_calls_are_charged_to_the_key_budget(held: httpx.AsyncClient) -> None:
    admin = {"Authorization": "Bearer admin-secret"}
    name = f"bot-{secrets.token_hex(4)}"
    created = await held.post("/admin/keys", json={"name": name, "budget_usd": 0.0035}, headers=admin)
    auth = {"Authorization": f"Bearer {created.json()['secret']}"}
    headers = auth | {
        "X-Conversation-Id": "budgeted",
        "X-History-Strategy": "summarize",
        "X-Max-History-Messages": "4",
    }
    for n in range(1, 5):
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"message number {n}"}]}
        assert (await held.post("/v1/chat/completions", headers=headers, json=body)).status_code == 200
    keys = (await held.get("/admin/keys", headers=admin)).json()["data"]
    (key,) = [k for k in keys if k["name"] == name]
    # 4 turns and the summary call of the cut at turn 4: 4 x 765 + 125 millionths of a USD
    assert Decimal(str(key["spent_usd"])) == (4 * 765 + 125) * MILLIONTH
    # 0.003185 spent of 0.0035: one more turn (and its summary call, when it cuts) goes through ...
    body = {"model": MODEL, "messages": [{"role": "user", "content": "five"}]}
    assert (await held.post("/v1/chat/completions", headers=headers, json=body)).status_code == 200
    # ... and then the budget is reached: 429 before any upstream call
    refused = await held.post("/v1/chat/completions", headers=headers, json=body)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
