"""Key budgets as a user sees them with the official SDK: streams without include_usage, abandoned streams.

The gateway (gateway-key mode, a prices file; served in the test process) in front of the mock upstream
process, per backend.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.servers import AppServer, ServerProcess, gateway_app

ADMIN = "admin-key-budget-sdk"
MODEL = "gpt-4o-mini"
WAIT = 30.0


@pytest.fixture(scope="module")
def keyed(
    upstream: ServerProcess, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppServer]:
    """A gateway holding the upstream key, with gpt-4o-mini at 1 USD per 1M tokens either way."""
    tmp = tmp_path_factory.mktemp("key-budget-sdk")
    prices = tmp / "prices.json"
    prices.write_text(json.dumps({MODEL: {"input": 1, "output": 1}}))
    settings = {
        "upstream_api_key": "sk-upstream-held",
        "admin_key": ADMIN,
        "prices_file": str(prices),
        "key_cache_seconds": "0",
    }
    server = gateway_app(upstream.url, database_url, **settings).start()
    try:
        yield server
    finally:
        server.stop()


def new_key(server: AppServer, budget_usd: str) -> str:
    """A fresh gateway key with this budget."""
    body = {"name": f"sdk-{secrets.token_hex(4)}", "budget_usd": float(budget_usd)}
    response = httpx.post(server.url + "/admin/keys", json=body, headers={"authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200, response.text
    secret: str = response.json()["secret"]
    return secret


def usage(server: AppServer, secret: str) -> Any:
    """The key's usage report."""
    response = httpx.get(server.url + "/v1/usage", headers={"authorization": f"Bearer {secret}"})
    assert response.status_code == 200, response.text
    return json.loads(response.text, parse_float=Decimal)


def client(server: AppServer, secret: str, conversation_id: str | None = None) -> OpenAI:
    """The official SDK pointed at the gateway, without retries."""
    headers = {"X-Conversation-Id": conversation_id} if conversation_id else {}
    return OpenAI(base_url=server.url + "/v1", api_key=secret, default_headers=headers, max_retries=0)


def test_streams_without_include_usage_spend_the_budget(keyed: AppServer) -> None:
    secret = new_key(keyed, "0.000001")  # one token's worth
    with client(keyed, secret) as sdk:
        chunks = list(
            sdk.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
        assert chunks and all(
            chunk.usage is None for chunk in chunks
        )  # no usage chunk: the client did not ask
        assert all(chunk.choices for chunk in chunks)
        spent = usage(keyed, secret)
        assert spent["requests"] == 1 and spent["prompt_tokens"] > 0 and spent["cost_usd"] > 0
        assert spent["estimated_requests"] == 0  # the upstream's own usage, asked for by the gateway
        with pytest.raises(openai.RateLimitError) as refused:
            sdk.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "again"}], stream=True
            )
        assert refused.value.code == "budget_exceeded"


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
def test_an_abandoned_stream_is_charged_an_estimate(keyed: AppServer, stateful: bool) -> None:
    secret = new_key(keyed, "10")
    conversation = f"abandon-{secrets.token_hex(4)}" if stateful else None
    with client(keyed, secret, conversation) as sdk:
        stream = sdk.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "tell me a story FAULT:stall-stream"}],
            stream=True,
        )
        first = next(iter(stream))
        assert first.choices
        stream.close()  # the client leaves; the upstream is still streaming
    deadline = time.monotonic() + WAIT
    report = usage(keyed, secret)
    while report["requests"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)  # the gateway records the call once it sees the disconnect
        report = usage(keyed, secret)
    assert report["requests"] == 1 and report["estimated_requests"] == 1
    assert report["prompt_tokens"] > 0 and report["cost_usd"] > 0
