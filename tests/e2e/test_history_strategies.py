"""End-to-end: the history strategies (sliding, stable, summarize) through the official SDK, streamed and not,
against the mock upstream with its prompt cache (`gateway mock-upstream --prompt-cache`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from gateway.mock_upstream.cache import cacheable, message_tokens
from gateway.window import SUMMARY_HEADING
from tests.servers import ServerProcess, base_env, free_port, gateway_app, upstream_requests

MODEL = "gpt-4o-mini"
SYSTEM = "You are a careful assistant. " * 180  # ~1,300 mock tokens: a cacheable prefix on its own
LIMIT = {
    "X-Max-History-Messages": "8"
}  # 4 turns; a cut keeps at most 4 messages (GATEWAY_HISTORY_TRIM_TO 0.5)


@pytest.fixture(scope="module")
def caching_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The mock upstream with its prompt cache on."""
    port = free_port()
    server = ServerProcess(
        args=["mock-upstream", "--port", str(port), "--prompt-cache"],
        env=base_env(),
        log_path=tmp_path_factory.mktemp("mock") / "mock.log",
        port=port,
        health_path="/mock/requests",
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(
    caching_upstream: ServerProcess, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A gateway with the default strategy (stable) and a short summary timeout."""
    server = gateway_app(caching_upstream.url, database_url, summary_timeout="2").start()
    yield server
    server.stop()


@pytest.fixture
def client(gateway: ServerProcess, api_key: str, conversation_id: str) -> Iterator[OpenAI]:
    headers = {"X-Conversation-Id": conversation_id}
    with OpenAI(base_url=gateway.url + "/v1", api_key=api_key, default_headers=headers, max_retries=0) as sdk:
        yield sdk


def turn(client: OpenAI, text: str, *, stream: bool = False, **headers: str) -> tuple[str, dict[str, str]]:
    """One turn through the SDK (plain or streamed): the reply text and the response headers."""
    messages: list[Any] = [{"role": "user", "content": text}]
    if not stream:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=messages, extra_headers=headers
        )
        return raw.parse().choices[0].message.content or "", dict(raw.headers)
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=messages, stream=True, extra_headers=headers
    ) as response:
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
        return text, dict(response.headers)


def start(client: OpenAI, **headers: str) -> None:
    """The first turn: it sets the system prompt."""
    client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "turn 1"}],
        extra_headers=headers,
    )


def sent(upstream: ServerProcess, api_key: str) -> list[list[dict[str, Any]]]:
    """The messages of every chat request the upstream got from this caller (summary calls included)."""
    return [r["body"]["messages"] for r in upstream_requests(upstream, api_key)]


def conversation(gateway: ServerProcess, api_key: str, conversation_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{gateway.url}/v1/conversations/{conversation_id}", headers={"Authorization": f"Bearer {api_key}"}
    )
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def patch(gateway: ServerProcess, api_key: str, conversation_id: str, **fields: Any) -> httpx.Response:
    return httpx.patch(
        f"{gateway.url}/v1/conversations/{conversation_id}",
        json=fields,
        headers={"Authorization": f"Bearer {api_key}"},
    )


def counts(headers: dict[str, str]) -> tuple[str, int, int, int]:
    """(X-History-Strategy, X-History-Messages, X-History-Dropped, X-History-Summarized)."""
    return (
        headers["x-history-strategy"],
        int(headers["x-history-messages"]),
        int(headers["x-history-dropped"]),
        int(headers["x-history-summarized"]),
    )


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_stable_is_the_default_and_keeps_the_prefix_between_cuts(
    client: OpenAI, caching_upstream: ServerProcess, api_key: str, stream: bool
) -> None:
    start(client)
    seen = [counts(turn(client, f"turn {n}", stream=stream, **LIMIT)[1]) for n in range(2, 10)]
    # turns 2-5 grow the window to 8 messages; turn 6 (10 stored) cuts to the newest 4; 7-8 grow to 8;
    # turn 9 (16 stored) cuts again to 4
    assert seen == [
        ("stable", 2, 0, 0),
        ("stable", 4, 0, 0),
        ("stable", 6, 0, 0),
        ("stable", 8, 0, 0),
        ("stable", 4, 6, 0),
        ("stable", 6, 6, 0),
        ("stable", 8, 6, 0),
        ("stable", 4, 12, 0),
    ]
    requests = sent(caching_upstream, api_key)
    assert len(requests) == 9
    # between two cuts every request starts with the whole previous request: byte-identical prefixes
    for earlier, later in [(1, 2), (2, 3), (3, 4), (5, 6), (6, 7)]:
        assert requests[later][: len(requests[earlier])] == requests[earlier]
    assert requests[5][1]["content"] == "turn 4"  # the cut kept the newest two whole turns


def test_stable_prefix_hits_the_upstream_cache_where_sliding_does_not(
    gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """The usage the SDK reads back: stable's cached share grows with the window, sliding's stays at the
    system prompt once the budget is reached."""
    system_tokens = message_tokens({"role": "system", "content": SYSTEM})
    cached: dict[str, list[int]] = {}
    for strategy in ("sliding", "stable"):
        headers = {"X-Conversation-Id": conversation_id, "X-History-Strategy": strategy}
        key = f"{api_key}-{strategy}"  # the mock caches per API key
        with OpenAI(base_url=gateway.url + "/v1", api_key=key, default_headers=headers) as sdk:
            start(sdk)
            cached[strategy] = []
            for n in range(2, 9):
                completion = sdk.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": f"turn {n} " * 40}],
                    extra_headers=LIMIT,
                )
                assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
                cached[strategy].append(completion.usage.prompt_tokens_details.cached_tokens or 0)
    # sliding: from turn 6 on (the window full) the history shifts, so only the system prompt is cached
    assert cached["sliding"][-2:] == [cacheable(system_tokens)] * 2
    # stable: turn 8 shares the system prompt and the window since the cut at turn 6
    assert cached["stable"][-1] > cached["sliding"][-1]


def test_unknown_strategy_is_a_400_naming_it(
    client: OpenAI, gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        turn(client, "hi", **{"X-History-Strategy": "fifo"})
    assert "fifo" in raised.value.message
    assert raised.value.body["param"] == "X-History-Strategy"  # type: ignore[index]
    turn(client, "hi")
    refused = patch(gateway, api_key, conversation_id, history_strategy="fifo")
    assert refused.status_code == 400 and "fifo" in refused.json()["error"]["message"]
    assert refused.json()["error"]["param"] == "history_strategy"
    assert conversation(gateway, api_key, conversation_id)["settings"]["history_strategy"] is None


def test_strategy_setting_and_header(
    client: OpenAI, gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    start(client)
    updated = patch(gateway, api_key, conversation_id, history_strategy="sliding", summary_model="gpt-4o")
    assert updated.status_code == 200
    settings = updated.json()["settings"]
    assert settings["history_strategy"] == "sliding" and settings["summary_model"] == "gpt-4o"
    assert counts(turn(client, "two")[1])[0] == "sliding"
    assert counts(turn(client, "three", **{"X-History-Strategy": "Stable"})[1])[0] == "stable"
    created = httpx.post(
        f"{gateway.url}/v1/conversations",
        json={"history_strategy": "summarize"},
        headers={"Authorization": f"Bearer {api_key}"},
    ).json()
    assert created["settings"]["history_strategy"] == "summarize" and created["summary"] is None


def planted(n: int) -> str:
    return f"turn {n}: FACT the locker {n} code is {n * 1111}" if n in (2, 4) else f"turn {n}: chatter"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_summarize_folds_what_each_cut_drops(
    client: OpenAI,
    gateway: ServerProcess,
    caching_upstream: ServerProcess,
    api_key: str,
    conversation_id: str,
    stream: bool,
) -> None:
    start(client, **{"X-History-Strategy": "summarize"})
    patch(gateway, api_key, conversation_id, history_strategy="summarize")
    seen = [counts(turn(client, planted(n), stream=stream, **LIMIT)[1]) for n in range(2, 10)]
    assert seen == [
        ("summarize", 2, 0, 0),
        ("summarize", 4, 0, 0),
        ("summarize", 6, 0, 0),
        ("summarize", 8, 0, 0),
        ("summarize", 4, 6, 6),  # the cut at turn 6 folded the 6 dropped messages into the summary
        ("summarize", 6, 6, 6),
        ("summarize", 8, 6, 6),
        ("summarize", 4, 12, 12),  # the next cut folded in the 6 more
    ]
    summary = conversation(gateway, api_key, conversation_id)["summary"]
    assert summary["through"] == 12 and summary["tokens"] > 0 and summary["updated_at"] > 0
    # the mock keeps the lines that state a fact: both planted facts survive both folds
    assert summary["text"] == "FACT the locker 2 code is 2222\nFACT the locker 4 code is 4444"
    requests = sent(caching_upstream, api_key)
    summary_calls = [r for r in requests if "Messages to fold into the summary:" in r[-1]["content"]]
    assert len(summary_calls) == 2
    last = requests[-1]
    assert last[0]["content"] == SYSTEM  # the stored system prompt, then the summary message
    assert last[1] == {"role": "system", "content": f"{SUMMARY_HEADING}\n\n{summary['text']}"}
    assert last[2]["content"] == planted(7)  # then the window from its start


def test_summary_is_editable_and_sent_under_every_strategy(
    client: OpenAI,
    gateway: ServerProcess,
    caching_upstream: ServerProcess,
    api_key: str,
    conversation_id: str,
) -> None:
    start(client)
    turn(client, "two")
    edited = patch(gateway, api_key, conversation_id, summary="The user is called Ada.").json()["summary"]
    assert edited["text"] == "The user is called Ada." and edited["through"] == 0 and edited["tokens"] > 0
    for strategy in ("sliding", "stable", "summarize"):
        _, headers = turn(client, "next", **{"X-History-Strategy": strategy})
        assert counts(headers)[3] == 0  # the summary covers no stored message (through = 0)
        assert sent(caching_upstream, api_key)[-1][1]["content"].endswith("The user is called Ada.")
    assert patch(gateway, api_key, conversation_id, summary=None).json()["summary"] is None
    turn(client, "after")
    assert not any(str(m["content"]).startswith(SUMMARY_HEADING) for m in sent(caching_upstream, api_key)[-1])
    bad = patch(gateway, api_key, conversation_id, summary=42)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "summary"


def test_failed_summary_keeps_the_previous_one_and_the_next_cut_folds_everything(
    client: OpenAI,
    gateway: ServerProcess,
    caching_upstream: ServerProcess,
    api_key: str,
    conversation_id: str,
) -> None:
    start(client)
    patch(gateway, api_key, conversation_id, history_strategy="summarize")
    for n in range(2, 7):
        turn(client, planted(n), **LIMIT)
    assert conversation(gateway, api_key, conversation_id)["summary"]["through"] == 6
    # A summary text with a fault marker makes the mock fail the next summary call (it reads the summary
    # so far in the request): the cut still happens, the turn goes ahead with the previous summary.
    patch(gateway, api_key, conversation_id, summary="FAULT:503 FACT the locker 2 code is 2222")
    for n in range(7, 10):
        _, headers = turn(client, f"turn {n}: FACT the locker {n} code is {n * 1111}", **LIMIT)
    assert counts(headers) == ("summarize", 4, 12, 6)  # cut at turn 9, summary still covers 6 messages
    kept = conversation(gateway, api_key, conversation_id)["summary"]
    assert kept["through"] == 6 and kept["text"].startswith("FAULT:503")
    usage = conversation(gateway, api_key, conversation_id)["usage"]
    assert usage["requests"] == 11  # 9 turns and 2 summary calls (the failed one is logged too)
    # Recovery: a clean summary, then the next cut folds in everything not yet summarized (6..18)
    patch(gateway, api_key, conversation_id, summary="FACT the locker 2 code is 2222")
    for n in range(10, 13):
        _, headers = turn(client, f"turn {n}", **LIMIT)
    assert counts(headers) == ("summarize", 4, 18, 18)
    text = conversation(gateway, api_key, conversation_id)["summary"]["text"]
    for n in (2, 4, 7, 8, 9):
        assert f"locker {n} code is {n * 1111}" in text, text


def test_summary_timeout_lets_the_turn_go_ahead(
    client: OpenAI, gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    start(client)
    patch(gateway, api_key, conversation_id, history_strategy="summarize")
    patch(gateway, api_key, conversation_id, summary="FAULT:slow:10000 slow summary")
    for n in range(2, 7):
        reply, headers = turn(client, f"turn {n}", **LIMIT)
    assert reply.endswith("turn 6") and counts(headers) == ("summarize", 4, 6, 0)
    assert (
        conversation(gateway, api_key, conversation_id)["summary"]["text"] == "FAULT:slow:10000 slow summary"
    )


def test_prompt_cache_key_is_added_only_when_enabled(
    tmp_path: Path, caching_upstream: ServerProcess, database_url: str, api_key: str, conversation_id: str
) -> None:
    server = gateway_app(caching_upstream.url, database_url, prompt_cache_key="1").start()
    try:
        headers = {"X-Conversation-Id": conversation_id}
        with OpenAI(base_url=server.url + "/v1", api_key=api_key, default_headers=headers) as sdk:
            sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "one"}])
            sdk.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "two"}],
                extra_body={"prompt_cache_key": "mine"},
            )
        bodies = [r["body"] for r in upstream_requests(caching_upstream, api_key)]
        assert len(bodies[0]["prompt_cache_key"]) == 64 and bodies[1]["prompt_cache_key"] == "mine"
    finally:
        server.stop()


def test_a_replayed_turn_carries_the_strategy_headers(
    client: OpenAI, gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    start(client)
    patch(gateway, api_key, conversation_id, summary="The user is called Ada.")
    _, first = turn(client, "again?")
    # the SDK's retry of the same body (its x-stainless-retry-count) is answered from the record
    _, replayed = turn(client, "again?", **{"x-stainless-retry-count": "1"})
    assert replayed["x-gateway-replayed"] == "true"
    assert counts(replayed) == counts(first) == ("stable", 2, 0, 0)
