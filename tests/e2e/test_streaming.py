"""Streamed turns: chunks relayed as they come, usage hidden unless asked, broken streams end with an error
event and store nothing."""

from __future__ import annotations

import concurrent.futures
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from tests.helpers import (
    ERROR_KEYS,
    MODEL,
    TOOLS,
    attempts,
    chat,
    data_events,
    sdk,
    sent_messages,
    stored,
    user,
    without_created_at,
)
from tests.servers import ServerProcess, upstream_requests


def test_response_is_upstream_body_with_conversation_header(
    gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    client = sdk(gateway, api_key, conversation_id)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-conversation-id"] == conversation_id
    assert raw.headers["x-request-id"].startswith("req_")
    completion = raw.parse()
    assert completion.model == "gpt-4o-mini-2024-07-18"
    assert completion.usage is not None and completion.usage.prompt_tokens > 0


def test_streaming_hides_injected_usage_and_stores_reply(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    client = sdk(gateway, api_key, conversation_id)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "tell me a story"}], stream=True
        )
    )
    assert all(c.usage is None for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "[1 messages] tell me a story"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert upstream_requests(upstream, api_key)[-1]["body"]["stream_options"] == {"include_usage": True}
    assert stored(gateway, api_key, conversation_id)[-1] == {
        "role": "assistant",
        "content": text,
        "created_at": stored(gateway, api_key, conversation_id)[-1]["created_at"],
    }
    # a client that asks for usage gets it
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "again"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0


async def test_async_client_streaming(gateway: ServerProcess, api_key: str, conversation_id: str) -> None:
    client = AsyncOpenAI(
        base_url=gateway.url + "/v1", api_key=api_key, default_headers={"X-Conversation-Id": conversation_id}
    )
    async with client:
        for turn in (1, 2):
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"async {turn}"}], stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == f"[{2 * turn - 1} messages] async {turn}"


def test_cut_stream_ends_with_an_error_event_and_no_finish_reason(
    gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}", "X-Conversation-Id": conversation_id},
        json={"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "FAULT:cut"}]},
    )
    events = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert "[DONE]" not in events
    assert "event: error" not in response.text
    last = json.loads(events[-1])
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert all(
        not c.get("choices") or c["choices"][0].get("finish_reason") is None
        for c in map(json.loads, events[:-1])
    )


def test_upstream_errors_pass_through(gateway: ServerProcess, api_key: str, conversation_id: str) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}", "X-Conversation-Id": conversation_id},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "FAULT:429"}]},
    )
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": "Bearer sk-bad-token"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("headers", "body", "code"),
    [
        (
            {"X-Conversation-Id": ""},
            {"model": "m", "messages": [{"role": "user", "content": "x"}]},
            "invalid_conversation_id",
        ),
        (
            {"X-Conversation-Id": "bad id!"},
            {"model": "m", "messages": [{"role": "user", "content": "x"}]},
            "invalid_conversation_id",
        ),
        (
            {"X-Conversation-Id": "x" * 129},
            {"model": "m", "messages": [{"role": "user", "content": "x"}]},
            "invalid_conversation_id",
        ),
        ({"X-Conversation-Id": "ok"}, {"model": "m", "messages": []}, "empty_array"),
        ({"X-Conversation-Id": "ok"}, {"model": "m"}, None),
        ({"X-Conversation-Id": "ok"}, {"model": "m", "messages": "hello"}, "invalid_type"),
        ({"X-Conversation-Id": "ok"}, {"model": "m", "messages": [{"content": "no role"}]}, None),
        (
            {"X-Conversation-Id": "ok", "X-Max-History-Messages": "-1"},
            {"model": "m", "messages": [{"role": "user", "content": "x"}]},
            "invalid_header",
        ),
    ],
)
def test_bad_input_is_a_clear_400_and_never_reaches_upstream(
    gateway: ServerProcess,
    upstream: ServerProcess,
    api_key: str,
    headers: dict[str, str],
    body: dict[str, Any],
    code: str | None,
) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {api_key}", **headers},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    if code is not None:
        assert error["code"] == code
    assert upstream_requests(upstream, api_key) == []


def test_client_leaving_mid_stream_releases_the_conversation_and_adds_nothing(
    start_gateway: Callable[..., ServerProcess], tmp_path: Any, api_key: str, conversation_id: str
) -> None:
    # With a 3 s lock wait, a lock still held by the abandoned stream (stalled for an hour) would give 409.
    server = start_gateway(f"sqlite+aiosqlite:///{tmp_path / 'leave.db'}", lock_timeout="3")
    client = sdk(server, api_key, conversation_id, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "first"}])
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "FAULT:stall-stream"}], stream=True
    )
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    stream.close()  # the client goes away while the upstream is still "thinking"
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "next"}]
    )
    assert reply.choices[0].message.content == "[3 messages] next"
    assert [m["content"] for m in stored(server, api_key, conversation_id)] == [
        "first",
        "[1 messages] first",
        "next",
        "[3 messages] next",
    ]


def test_unreachable_upstream_is_502_and_timeout_is_504(
    start_gateway: Callable[..., ServerProcess], tmp_path: Any, api_key: str, conversation_id: str
) -> None:
    from tests.servers import free_port

    dead = start_gateway(
        f"sqlite+aiosqlite:///{tmp_path / 'dead.db'}", upstream_url=f"http://127.0.0.1:{free_port()}"
    )
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(dead, api_key, conversation_id, max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "anyone?"}]
        )
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_unreachable"
    slow = start_gateway(f"sqlite+aiosqlite:///{tmp_path / 'slow.db'}", upstream_timeout="1")
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(slow, api_key, conversation_id, max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "FAULT:stall"}]
        )
    assert caught.value.status_code == 504
    assert caught.value.code == "upstream_timeout"
    assert (
        httpx.get(
            f"{slow.url}/v1/conversations/{conversation_id}", headers={"Authorization": f"Bearer {api_key}"}
        ).status_code
        == 404
    )


@pytest.mark.parametrize(
    "cid",
    [b"", b"x" * 129, b"a b", b"a/b", b"a,b", b"a;b", b"%41", b"a+b", b"caf\xc3\xa9", b"a@b", b"(a)"],
    ids=[
        "empty",
        "129",
        "inner-space",
        "slash",
        "comma",
        "semicolon",
        "percent",
        "plus",
        "utf8",
        "at",
        "parens",
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_invalid_conversation_ids_are_400_without_upstream_call(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, cid: bytes, stream: bool
) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers=[(b"Authorization", f"Bearer {api_key}".encode()), (b"X-Conversation-Id", cid)],
        json={"model": MODEL, "messages": [user("hi")], "stream": stream},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    assert error["code"] == "invalid_conversation_id" and error["type"] == "invalid_request_error"
    assert upstream_requests(upstream, api_key) == []


def test_system_prompt_and_message_fields_reach_upstream_as_sent(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    client = sdk(gateway, api_key, conversation_id)
    first = {
        "role": "user",
        "name": "alice",
        "content": [
            {"type": "text", "text": "what is this?"},
            {
                "type": "image_url",
                "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
            },
        ],
    }
    system = {"role": "system", "content": [{"type": "text", "text": "Sys in parts"}], "name": "boss"}
    client.chat.completions.create(model=MODEL, messages=[system, first])
    assert sent_messages(upstream, api_key) == [system, first]
    client.chat.completions.create(model=MODEL, messages=[user("next")])
    sent = sent_messages(upstream, api_key)
    assert sent[0] == system and sent[1] == first and sent[-1] == user("next")
    assert all("created_at" not in m for m in sent)
    assert without_created_at(stored(gateway, api_key, conversation_id))[0] == first


# --- streaming ---------------------------------------------------------------------------------------------


def test_stream_chunks_are_not_buffered(
    gateway: ServerProcess, database_url: str, api_key: str, conversation_id: str
) -> None:
    """The mock sends one content chunk, then stalls for an hour: a buffering gateway would show nothing."""
    client = sdk(gateway, api_key, conversation_id, max_retries=0, timeout=15.0)
    stream = client.chat.completions.create(
        model=MODEL, messages=[user("one two three FAULT:stall-stream")], stream=True
    )
    seen = []
    for c in stream:
        seen.append(c)
        if c.choices and c.choices[0].delta.content:
            break
    stream.close()
    assert seen[-1].choices[0].delta.content == "[1 "
    # the abandoned turn added nothing and released the conversation at once
    quick = sdk(gateway, api_key, conversation_id, max_retries=0, timeout=15.0)
    reply = quick.chat.completions.create(model=MODEL, messages=[user("next")])
    assert reply.choices[0].message.content == "[1 messages] next"
    for _ in range(100):  # the abandoned attempt is in the request log, with its status and error
        rows = attempts(database_url, api_key)
        if len(rows) == 2:
            break
        time.sleep(0.1)
    assert [r["status"] == 200 for r in rows] == [False, True] or [r["status"] == 200 for r in rows] == [
        True,
        False,
    ]
    assert [bool(r["error"]) for r in rows if r["status"] != 200] == [True]


@pytest.mark.parametrize(
    "options", ["absent", None, {"include_usage": False}, {"include_usage": True}], ids=str
)
def test_usage_chunk_only_when_asked(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str, options: Any
) -> None:
    body: dict[str, Any] = {"model": MODEL, "messages": [user("count")], "stream": True}
    if options != "absent":
        body["stream_options"] = options
    response = chat(gateway, api_key, conversation_id, body)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-conversation-id"] == conversation_id
    events = data_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    usage_chunks = [c for c in chunks if c.get("usage")]
    assert upstream_requests(upstream, api_key)[-1]["body"]["stream_options"]["include_usage"] is True
    if isinstance(options, dict) and options["include_usage"]:
        assert len(usage_chunks) == 1 and usage_chunks[0]["choices"] == []
        assert chunks[-1] is usage_chunks[0]
    else:
        assert usage_chunks == [] and all(c["choices"] for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"


@pytest.mark.parametrize("fault", ["FAULT:cut", "FAULT:reset", "FAULT:garbage", "FAULT:cut-after-usage"])
def test_broken_stream_ends_with_a_data_error_event(
    gateway: ServerProcess, api_key: str, conversation_id: str, fault: str
) -> None:
    body = {
        "model": MODEL,
        "messages": [user(fault)],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = chat(gateway, api_key, conversation_id, body)
    assert response.status_code == 200
    assert "event:" not in response.text
    events = data_events(response.text)
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    assert set(last) >= {"error"} and set(last["error"]) == ERROR_KEYS
    for payload in events[:-1]:
        try:
            parsed = json.loads(payload)
        except ValueError:
            continue  # garbage relayed as-is is the upstream's, not a finish_reason
        assert all(choice.get("finish_reason") is None for choice in parsed.get("choices") or [])
    assert stored(gateway, api_key, conversation_id) == []


async def test_async_sdk_raises_on_a_broken_stream_and_memory_holds(
    gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    client = AsyncOpenAI(
        base_url=gateway.url + "/v1",
        api_key=api_key,
        max_retries=0,
        default_headers={"X-Conversation-Id": conversation_id},
    )
    async with client:
        first = await client.chat.completions.create(model=MODEL, messages=[user("a")])
        assert first.choices[0].message.content == "[1 messages] a"
        stream = await client.chat.completions.create(model=MODEL, messages=[user("FAULT:cut")], stream=True)
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass
        stream = await client.chat.completions.create(model=MODEL, messages=[user("b")], stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "[3 messages] b"


# --- concurrency and isolation -----------------------------------------------------------------------------


def test_sixteen_concurrent_streamed_turns_are_serialized(
    gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    client = sdk(gateway, api_key, conversation_id, max_retries=0)

    def turn(i: int) -> str:
        stream = client.chat.completions.create(model=MODEL, messages=[user(f"n{i}")], stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        texts = list(pool.map(turn, range(16)))
    counts = sorted(int(t.split()[0][1:]) for t in texts)
    assert counts == list(range(1, 32, 2))
    messages = stored(gateway, api_key, conversation_id)
    assert [m["role"] for m in messages] == ["user", "assistant"] * 16
    for index in range(16):
        assert (
            messages[2 * index + 1]["content"]
            == f"[{2 * index + 1} messages] {messages[2 * index]['content']}"
        )


def test_two_callers_same_id_streaming(gateway: ServerProcess, conversation_id: str) -> None:
    alice, bob = f"sk-alice-{secrets.token_hex(4)}", f"sk-bob-{secrets.token_hex(4)}"
    for key, expected in ((alice, 1), (bob, 1), (alice, 3)):
        stream = sdk(gateway, key, conversation_id).chat.completions.create(
            model=MODEL, messages=[user(key)], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == f"[{expected} messages] {key}"
    assert (
        len(stored(gateway, alice, conversation_id)) == 4 and len(stored(gateway, bob, conversation_id)) == 2
    )
    assert all(m["content"] != alice for m in stored(gateway, bob, conversation_id))


def test_langchain_style_full_history_streams_without_include_usage(
    gateway: ServerProcess,
    upstream: ServerProcess,
    database_url: str,
    api_key: str,
    conversation_id: str,
) -> None:
    client = sdk(gateway, api_key, conversation_id)
    history: list[dict[str, Any]] = [{"role": "system", "content": "You are a helpful assistant."}]
    for turn in range(1, 4):
        history.append(user(f"question {turn}"))
        chunks = list(
            client.chat.completions.create(model=MODEL, messages=history, stream=True, temperature=0.7)
        )
        assert all(c.usage is None for c in chunks)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == f"[{2 * turn} messages] question {turn}"
        history.append({"role": "assistant", "content": text})
        assert sent_messages(upstream, api_key) == history[:-1]
    assert len(stored(gateway, api_key, conversation_id)) == 6
    rows = [r for r in attempts(database_url, api_key) if r["conversation_id"] == conversation_id]
    assert len(rows) == 3 and all(r["status"] == 200 and r["prompt_tokens"] for r in rows)


def test_sdk_stream_helper_and_parse_messages_dedupe(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """`chat.completions.stream()` and `.parse()` return ParsedChatCompletionMessage objects (extra `parsed`,
    tool calls with `index` and `parsed_arguments`, content ""): sent straight back, they must dedupe."""
    client = sdk(gateway, api_key, conversation_id)
    history: list[Any] = [user("one")]
    with client.chat.completions.stream(model=MODEL, messages=history) as stream:
        message = stream.get_final_completion().choices[0].message
    history += [message, user("two")]
    message = client.chat.completions.parse(model=MODEL, messages=history).choices[0].message
    assert message.content == "[3 messages] two"
    history += [message, user("weather?")]
    with client.chat.completions.stream(model=MODEL, messages=history, tools=TOOLS) as stream:
        message = stream.get_final_completion().choices[0].message
    assert message.tool_calls
    history += [message, {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "sunny"}]
    reply = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS)
    assert reply.choices[0].message.content == "[7 messages] tool result: sunny"
    assert len(stored(gateway, api_key, conversation_id)) == 8
    assert len(sent_messages(upstream, api_key)) == 7
