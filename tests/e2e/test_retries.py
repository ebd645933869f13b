"""Safe retries: a retried turn whose answer was lost gets the recorded response again, not a second turn."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.helpers import (
    attempt_count,
    auth,
    data_events,
    stored,
    stream_text,
    turn_body,
    turn_headers,
)
from tests.servers import ServerProcess, upstream_requests

RETRY = {"x-stainless-retry-count": "1"}


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain HTTP client with a generous timeout."""
    with httpx.Client(timeout=30) as client:
        yield client


def sent_texts(upstream: ServerProcess, api_key: str) -> list[str]:
    """The last user message of every request the upstream received from this caller."""
    return [r["body"]["messages"][-1]["content"] for r in upstream_requests(upstream, api_key)]


def test_retry_of_a_turn_whose_answer_was_lost_is_replayed(
    gateway: ServerProcess,
    upstream: ServerProcess,
    database_url: str,
    http: httpx.Client,
    api_key: str,
    conversation_id: str,
) -> None:
    url = f"{gateway.url}/v1/chat/completions"
    body = turn_body("FAULT:slow:1500 what is the answer?")
    with pytest.raises(httpx.ReadTimeout):  # the client gives up; the gateway finishes and stores the turn
        httpx.post(url, json=body, headers=turn_headers(api_key, conversation_id), timeout=0.5)
    deadline = time.monotonic() + 20
    while not upstream_requests(
        upstream, api_key
    ):  # the first attempt is running (and holds the conversation)
        assert time.monotonic() < deadline
        time.sleep(0.02)
    retry = http.post(url, json=body, headers=turn_headers(api_key, conversation_id, **RETRY))
    assert retry.status_code == 200, retry.text
    assert retry.headers["x-gateway-replayed"] == "true"
    assert retry.headers["x-conversation-id"] == conversation_id
    assert (
        retry.json()["choices"][0]["message"]["content"] == "[1 messages] FAULT:slow:1500 what is the answer?"
    )
    assert sent_texts(upstream, api_key) == ["FAULT:slow:1500 what is the answer?"]  # one upstream call
    assert len(stored(gateway, api_key, conversation_id)) == 2
    assert attempt_count(database_url, api_key, conversation_id) == 1  # the replay is not logged again
    after = http.post(url, json=turn_body("next"), headers=turn_headers(api_key, conversation_id))
    assert after.json()["choices"][0]["message"]["content"] == "[3 messages] next"
    assert "x-gateway-replayed" not in after.headers


def test_the_sdks_own_retry_after_a_timeout_gets_the_stored_answer(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    # The SDK times out after 1 s, retries (x-stainless-retry-count: 1) with the same bytes while the gateway
    # still runs the first call; the retry waits for the conversation, then gets the stored answer.
    with OpenAI(
        base_url=gateway.url + "/v1",
        api_key=api_key,
        timeout=1.0,
        max_retries=2,
        default_headers={"X-Conversation-Id": conversation_id},
    ) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "FAULT:slow:1800 slow thought"}]
        )
    assert raw.retries_taken >= 1
    assert raw.headers["x-gateway-replayed"] == "true"
    assert raw.parse().choices[0].message.content == "[1 messages] FAULT:slow:1800 slow thought"
    assert sent_texts(upstream, api_key) == ["FAULT:slow:1800 slow thought"]
    assert [m["role"] for m in stored(gateway, api_key, conversation_id)] == ["user", "assistant"]


@pytest.mark.parametrize("include_usage", [False, True])
def test_a_stream_is_replayed_as_a_well_formed_stream(
    gateway: ServerProcess,
    upstream: ServerProcess,
    http: httpx.Client,
    api_key: str,
    conversation_id: str,
    include_usage: bool,
) -> None:
    url = f"{gateway.url}/v1/chat/completions"
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    body = turn_body("tell me a story", stream=True, **options)
    first = http.post(url, json=body, headers=turn_headers(api_key, conversation_id))
    assert first.text.endswith("data: [DONE]\n\n")
    # the client lost the end of the stream and retries the same request
    again = http.post(url, json=body, headers=turn_headers(api_key, conversation_id, **RETRY))
    assert again.status_code == 200 and again.headers["x-gateway-replayed"] == "true"
    assert again.headers["content-type"].startswith("text/event-stream")
    assert stream_text(again.text) == stream_text(first.text) == "[1 messages] tell me a story"
    payloads = data_events(again.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"].startswith("chatcmpl-") for c in chunks)
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])
    usage = [c["usage"] for c in chunks if c.get("usage")]
    original_usage = [
        json.loads(p)["usage"] for p in data_events(first.text)[:-1] if json.loads(p).get("usage")
    ]
    assert usage == original_usage and bool(usage) == include_usage
    assert len(upstream_requests(upstream, api_key)) == 1
    assert len(stored(gateway, api_key, conversation_id)) == 2


def test_sdk_reads_a_replayed_stream_and_a_replayed_stream_turn_as_json(
    gateway: ServerProcess, http: httpx.Client, api_key: str, conversation_id: str
) -> None:
    with OpenAI(
        base_url=gateway.url + "/v1",
        api_key=api_key,
        max_retries=0,
        default_headers={"X-Conversation-Id": conversation_id},
    ) as client:
        messages: Any = [{"role": "user", "content": "stream me"}]
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
            if c.choices
        )
        replayed = client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True, extra_headers=RETRY
        )
        assert "".join(c.choices[0].delta.content or "" for c in replayed if c.choices) == streamed
        plain = client.chat.completions.create(model="gpt-4o-mini", messages=messages, extra_headers=RETRY)
    assert plain.choices[0].message.content == streamed == "[1 messages] stream me"
    assert plain.id.startswith("chatcmpl-") and plain.usage is not None and plain.usage.prompt_tokens > 0
    assert len(stored(gateway, api_key, conversation_id)) == 2


def test_a_whole_history_client_retry_is_replayed(
    gateway: ServerProcess, upstream: ServerProcess, http: httpx.Client, api_key: str, conversation_id: str
) -> None:
    url = f"{gateway.url}/v1/chat/completions"
    history: list[dict[str, Any]] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one"},
    ]
    first = http.post(
        url,
        json={"model": "gpt-4o-mini", "messages": history},
        headers=turn_headers(api_key, conversation_id),
    )
    history += [first.json()["choices"][0]["message"], {"role": "user", "content": "two"}]
    body = {"model": "gpt-4o-mini", "messages": history}
    second = http.post(url, json=body, headers=turn_headers(api_key, conversation_id))
    assert second.json()["choices"][0]["message"]["content"] == "[4 messages] two"
    again = http.post(url, json=body, headers=turn_headers(api_key, conversation_id, **RETRY))
    assert again.headers["x-gateway-replayed"] == "true"
    assert again.json() == second.json()
    assert len(upstream_requests(upstream, api_key)) == 2
    assert len(stored(gateway, api_key, conversation_id)) == 4


def test_what_is_not_a_replay(
    gateway: ServerProcess, upstream: ServerProcess, http: httpx.Client, api_key: str, conversation_id: str
) -> None:
    url = f"{gateway.url}/v1/chat/completions"

    def send(text: str, **headers: str) -> httpx.Response:
        return http.post(url, json=turn_body(text), headers=turn_headers(api_key, conversation_id, **headers))

    assert send("yes").status_code == 200
    # the same message again without a retry header is a new turn: people do say "yes" twice
    again = send("yes")
    assert "x-gateway-replayed" not in again.headers
    assert again.json()["choices"][0]["message"]["content"] == "[3 messages] yes"
    # a retry with other messages than the last turn's is a new turn
    assert "x-gateway-replayed" not in send("no", **RETRY).headers
    # after a failed attempt, a retry of the previous message is not taken for the stored turn's retry
    assert send("FAULT:500").status_code == 500
    retried = send("no", **RETRY)
    assert "x-gateway-replayed" not in retried.headers
    assert retried.json()["choices"][0]["message"]["content"] == "[7 messages] no"
    assert len(stored(gateway, api_key, conversation_id)) == 8


def test_idempotency_key_replays_any_recent_turn(
    gateway: ServerProcess, upstream: ServerProcess, http: httpx.Client, api_key: str, conversation_id: str
) -> None:
    url = f"{gateway.url}/v1/chat/completions"
    first_key, second_key = secrets.token_hex(8), secrets.token_hex(8)

    def send(
        text: str, key: str, conversation: str = conversation_id, stream: bool = False
    ) -> httpx.Response:
        headers = turn_headers(api_key, conversation, **{"Idempotency-Key": key})
        return http.post(url, json=turn_body(text, stream=stream), headers=headers)

    first = send("alpha", first_key)
    assert send("beta", second_key).status_code == 200
    replay = send("alpha", first_key)  # an older turn, no retry header needed
    assert replay.headers["x-gateway-replayed"] == "true"
    assert replay.json() == first.json()
    streamed = send("alpha", first_key, stream=True)
    assert (
        streamed.headers["x-gateway-replayed"] == "true"
        and stream_text(streamed.text) == "[1 messages] alpha"
    )
    reused = send("gamma", first_key)
    assert reused.status_code == 400
    assert reused.json()["error"] == {
        "message": reused.json()["error"]["message"],
        "type": "invalid_request_error",
        "param": "Idempotency-Key",
        "code": "idempotency_key_reused",
    }
    fresh = send("alpha", secrets.token_hex(8))  # a new key is a new turn, even with the same message
    assert fresh.json()["choices"][0]["message"]["content"] == "[5 messages] alpha"
    other = send("alpha", first_key, conversation=f"{conversation_id}-other")  # keys are per conversation
    assert other.json()["choices"][0]["message"]["content"] == "[1 messages] alpha"
    assert "x-gateway-replayed" not in other.headers
    assert sent_texts(upstream, api_key) == ["alpha", "beta", "alpha", "alpha"]
    assert len(stored(gateway, api_key, conversation_id)) == 6


def test_an_old_turn_is_not_replayed_after_the_window(
    start_gateway: Callable[..., ServerProcess],
    tmp_path: Path,
    http: httpx.Client,
    api_key: str,
    conversation_id: str,
) -> None:
    server = start_gateway(f"sqlite+aiosqlite:///{tmp_path / 'window.db'}", retry_replay_window="0.5")
    url = f"{server.url}/v1/chat/completions"
    http.post(url, json=turn_body("hello"), headers=turn_headers(api_key, conversation_id))
    time.sleep(0.6)
    late = http.post(url, json=turn_body("hello"), headers=turn_headers(api_key, conversation_id, **RETRY))
    assert "x-gateway-replayed" not in late.headers
    assert late.json()["choices"][0]["message"]["content"] == "[3 messages] hello"


# --- pass-through mode, the shared gateway ---------------------------------------------------------------


def test_upstream_429_retry_after_reaches_the_sdk_for_plain_and_streamed_turns(
    gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    with OpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0) as client:
        conv = {"X-Conversation-Id": conversation_id}
        for stream in (False, True):
            with pytest.raises(openai.RateLimitError) as err:
                result = client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": "FAULT:429"}],
                    stream=stream,
                    extra_headers=conv,
                )
                if stream:
                    list(result)
            assert err.value.response.headers["retry-after"] == "7"
    response = httpx.get(f"{gateway.url}/v1/conversations/{conversation_id}", headers=auth(api_key))
    assert response.status_code == 404  # nothing was added, not even the conversation


def test_idempotency_key_replays_a_stream_as_a_stream_the_sdk_reads(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    key = "idem-" + secrets.token_hex(6)
    headers = {"X-Conversation-Id": conversation_id, "Idempotency-Key": key}
    messages: Any = [{"role": "user", "content": "tell me"}]
    with OpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0) as client:

        def run() -> tuple[str, str, Any]:
            chunks = list(
                client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_headers=headers,
                )
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            usage = [c.usage for c in chunks if c.usage]
            assert len({c.id for c in chunks}) == 1 and len(finish) == 1 and len(usage) == 1
            return text, chunks[0].id, usage[0]

        first = run()
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "next"}],
            extra_headers={"X-Conversation-Id": conversation_id},
        )
        again = run()  # an older turn, replayed by its key
        as_json = client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, extra_headers=headers
        )
    assert first == again
    assert as_json.choices[0].message.content == first[0] and as_json.id == first[1]
    assert len(upstream_requests(upstream, api_key)) == 2
    stored = httpx.get(f"{gateway.url}/v1/conversations/{conversation_id}", headers=auth(api_key)).json()
    assert stored["message_count"] == 4


def test_idempotency_key_outlives_the_retry_count_window(
    start_gateway: Any, upstream: ServerProcess, database_url: str, api_key: str, conversation_id: str
) -> None:
    server = start_gateway(database_url, retry_replay_window="0.5")
    url = f"{server.url}/v1/chat/completions"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "keyed"}]}
    headers = {**auth(api_key), "X-Conversation-Id": conversation_id, "Idempotency-Key": "k-1"}
    first = httpx.post(url, json=body, headers=headers)
    assert first.status_code == 200, first.text
    time.sleep(0.7)  # past the retry-count window, far inside the 24 h of an Idempotency-Key
    again = httpx.post(url, json=body, headers={**headers, "x-stainless-retry-count": "1"})
    assert again.status_code == 200 and again.headers.get("x-gateway-replayed") == "true"
    assert again.json() == first.json()
    assert len(upstream_requests(upstream, api_key)) == 1
