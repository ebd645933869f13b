"""End-to-end: the real gateway in front of the mock upstream, driven by the official openai SDK."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.servers import ServerProcess, upstream_requests

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"input": {"type": "string"}}},
        },
    }
]


_OPEN_CLIENTS: list[OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Close every SDK client a test opened (unclosed sockets fail the run)."""
    yield
    while _OPEN_CLIENTS:
        _OPEN_CLIENTS.pop().close()


def sdk(gateway: ServerProcess, api_key: str, conversation_id: str | None, **kwargs: Any) -> OpenAI:
    """A sync SDK client pointed at the gateway, closed after the test."""
    headers = {"X-Conversation-Id": conversation_id} if conversation_id else {}
    client = OpenAI(base_url=gateway.url + "/v1", api_key=api_key, default_headers=headers, **kwargs)
    _OPEN_CLIENTS.append(client)
    return client


def stored(gateway: ServerProcess, api_key: str, conversation_id: str) -> list[dict[str, Any]]:
    """The messages the gateway stored for a conversation."""
    response = httpx.get(
        f"{gateway.url}/v1/conversations/{conversation_id}/messages",
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def roles(messages: list[dict[str, Any]]) -> list[str]:
    """The role of each message."""
    return [m["role"] for m in messages]


def test_memory_over_several_turns(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    client = sdk(gateway, api_key, conversation_id)
    for turn in range(1, 4):
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"message {turn}"}]
        )
        # the mock says how many messages it received: all earlier turns plus the new one
        assert reply.choices[0].message.content == f"[{2 * turn - 1} messages] message {turn}"
    sent = upstream_requests(upstream, api_key)[-1]["body"]["messages"]
    assert [m["content"] for m in sent] == [
        "message 1",
        "[1 messages] message 1",
        "message 2",
        "[3 messages] message 2",
        "message 3",
    ]
    messages = stored(gateway, api_key, conversation_id)
    assert roles(messages) == ["user", "assistant"] * 3
    assert all(isinstance(m["created_at"], int) for m in messages)
    info = httpx.get(
        f"{gateway.url}/v1/conversations/{conversation_id}", headers={"Authorization": f"Bearer {api_key}"}
    ).json()
    assert info["object"] == "conversation" and info["message_count"] == 6 and info["id"] == conversation_id
    assert info["system_prompt"] is None


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


def test_system_prompt_is_stored_replaced_and_always_first(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    client = sdk(gateway, api_key, conversation_id)
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "one"}],
    )
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "two"}])
    sent = upstream_requests(upstream, api_key)[-1]["body"]["messages"]
    assert sent[0] == {"role": "system", "content": "You are terse."}
    assert roles(sent) == ["system", "user", "assistant", "user"]
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "developer", "content": "You are verbose."}, {"role": "user", "content": "three"}],
    )
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "four"}])
    sent = upstream_requests(upstream, api_key)[-1]["body"]["messages"]
    assert sent[0] == {"role": "developer", "content": "You are verbose."}
    assert roles(sent)[1:] == ["user", "assistant"] * 3 + ["user"]
    messages = stored(gateway, api_key, conversation_id)
    assert "system" not in roles(messages) and "developer" not in roles(messages)
    info = httpx.get(
        f"{gateway.url}/v1/conversations/{conversation_id}", headers={"Authorization": f"Bearer {api_key}"}
    ).json()
    assert info["system_prompt"] == "You are verbose." and info["message_count"] == 8


def test_full_history_clients_are_not_doubled(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """A LangChain-style client resends everything, including the SDK's own returned message objects."""
    client = sdk(gateway, api_key, conversation_id)
    history: list[Any] = [{"role": "system", "content": "sys"}, {"role": "user", "content": "first"}]
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=history)
    history += [reply.choices[0].message, {"role": "user", "content": "second"}]
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=history)
    assert reply.choices[0].message.content == "[4 messages] second"
    history += [reply.choices[0].message.model_dump(), {"role": "user", "content": "third"}]
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=history)
    assert reply.choices[0].message.content == "[6 messages] third"
    assert len(stored(gateway, api_key, conversation_id)) == 6
    assert len(upstream_requests(upstream, api_key)[-1]["body"]["messages"]) == 6


def _tool_round_trip(client: OpenAI, stream: bool) -> None:
    if stream:
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "weather in Paris?"}],
                tools=TOOLS,
                stream=True,
            )
        )
        calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
        call_id = calls[0][0].id
        arguments = "".join(c[0].function.arguments or "" for c in calls)
    else:
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "weather in Paris?"}], tools=TOOLS
        )
        assert reply.choices[0].finish_reason == "tool_calls"
        call = reply.choices[0].message.tool_calls[0]
        call_id, arguments = call.id, call.function.arguments
    assert json.loads(arguments) == {"input": "weather in Paris?"}
    final = client.chat.completions.create(
        model="gpt-4o-mini",
        tools=TOOLS,
        messages=[{"role": "tool", "tool_call_id": call_id, "content": "sunny, 21C"}],
    )
    assert final.choices[0].message.content == "[3 messages] tool result: sunny, 21C"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_tool_call_round_trip(
    gateway: ServerProcess, api_key: str, conversation_id: str, stream: bool
) -> None:
    _tool_round_trip(sdk(gateway, api_key, conversation_id), stream)
    messages = stored(gateway, api_key, conversation_id)
    assert roles(messages) == ["user", "assistant", "tool", "assistant"]
    assert messages[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert messages[1]["content"] is None
    assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == {"input": "weather in Paris?"}


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


@pytest.mark.parametrize(
    ("fault", "stream", "error"),
    [
        ("FAULT:500", False, openai.InternalServerError),
        ("FAULT:400", False, openai.BadRequestError),
        ("FAULT:garbage", False, openai.APIStatusError),
        ("FAULT:reset", False, openai.APIStatusError),
        ("FAULT:cut", True, openai.APIError),
        ("FAULT:garbage", True, openai.APIError),
    ],
)
def test_failures_add_nothing(
    gateway: ServerProcess,
    api_key: str,
    conversation_id: str,
    fault: str,
    stream: bool,
    error: type[Exception],
) -> None:
    client = sdk(gateway, api_key, conversation_id, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
    before = stored(gateway, api_key, conversation_id)
    with pytest.raises(error):
        result = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"please {fault}"}], stream=stream
        )
        if stream:
            chunks = list(result)  # type: ignore[arg-type]
            assert all(c.choices[0].finish_reason is None for c in chunks if c.choices)
    assert stored(gateway, api_key, conversation_id) == before
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "still?"}]
    )
    assert reply.choices[0].message.content == "[3 messages] still?"


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


def test_restart_keeps_history(
    start_gateway: Callable[..., ServerProcess], tmp_path: Any, api_key: str, conversation_id: str
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'restart.db'}"
    server = start_gateway(database_url, process=True)
    client = sdk(server, api_key, conversation_id)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "remember me"}])
    server.restart()
    reply = sdk(server, api_key, conversation_id).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "do you?"}]
    )
    assert reply.choices[0].message.content == "[3 messages] do you?"


async def test_concurrent_turns_on_one_conversation_are_serialized(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    client = AsyncOpenAI(
        base_url=gateway.url + "/v1",
        api_key=api_key,
        max_retries=0,
        default_headers={"X-Conversation-Id": conversation_id},
    )
    async with client:
        replies = await asyncio.gather(
            *[
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"FAULT:slow:20 n{i}"}]
                )
                for i in range(16)
            ]
        )
    counts = sorted(int(r.choices[0].message.content.split()[0][1:]) for r in replies)  # type: ignore[union-attr]
    assert counts == list(range(1, 32, 2))  # each turn saw every earlier one
    messages = stored(gateway, api_key, conversation_id)
    assert roles(messages) == ["user", "assistant"] * 16
    for index in range(16):
        assert messages[2 * index + 1]["content"].startswith(f"[{2 * index + 1} messages]")


async def test_different_conversations_do_not_wait(gateway: ServerProcess, api_key: str) -> None:
    client = AsyncOpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0)
    async with client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(
            *[
                client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": "FAULT:slow:500"}],
                    extra_headers={"X-Conversation-Id": f"parallel-{secrets.token_hex(4)}"},
                )
                for _ in range(8)
            ]
        )
        elapsed = loop.time() - started
    assert elapsed < 8 * 0.5  # serialized would take at least 4 s; parallel takes about 0.5 s


def test_two_callers_are_isolated(gateway: ServerProcess, conversation_id: str) -> None:
    alice, bob = f"sk-alice-{secrets.token_hex(4)}", f"sk-bob-{secrets.token_hex(4)}"
    sdk(gateway, alice, conversation_id).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "alice here"}]
    )
    reply = sdk(gateway, bob, conversation_id).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "bob here"}]
    )
    assert reply.choices[0].message.content == "[1 messages] bob here"
    assert stored(gateway, alice, conversation_id)[0]["content"] == "alice here"
    assert stored(gateway, bob, conversation_id)[0]["content"] == "bob here"


def test_without_header_the_body_passes_through_unchanged(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str
) -> None:
    body = {
        "model": "gpt-4o-mini",
        "temperature": 0.3,
        "messages": [{"role": "user", "content": "stateless"}],
        "stream": True,
    }
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"}
    )
    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
    assert upstream_requests(upstream, api_key)[-1]["body"] == body
    assert "x-conversation-id" not in response.headers


def test_other_endpoints_pass_through(gateway: ServerProcess, api_key: str) -> None:
    client = sdk(gateway, api_key, None)
    assert [m.id for m in client.models.list().data][:2] == ["gpt-4o-mini", "gpt-4o"]
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    embedding = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(embedding.data) == 2


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


def test_bad_json_and_sdk_errors(gateway: ServerProcess, api_key: str) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=b"{not json",
        headers={
            "Authorization": f"Bearer {api_key}",
            "X-Conversation-Id": "c1",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gateway, api_key, "bad id").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.code == "invalid_conversation_id"


def test_unknown_conversation_is_404(gateway: ServerProcess, api_key: str) -> None:
    for path in ("/v1/conversations/nope", "/v1/conversations/nope/messages"):
        response = httpx.get(gateway.url + path, headers={"Authorization": f"Bearer {api_key}"})
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_healthz(gateway: ServerProcess) -> None:
    response = httpx.get(gateway.url + "/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_header_names_are_case_insensitive(
    gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    for name in ("x-conversation-id", "X-CONVERSATION-ID"):
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {api_key}", name: conversation_id},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert response.status_code == 200
    assert len(stored(gateway, api_key, conversation_id)) == 4


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


def test_busy_conversation_gets_409_after_the_lock_wait(
    start_gateway: Callable[..., ServerProcess], tmp_path: Any, api_key: str, conversation_id: str
) -> None:
    server = start_gateway(f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}", lock_timeout="0.5")
    slow = httpx.Client(timeout=30)

    def turn(text: str) -> httpx.Response:
        return slow.post(
            f"{server.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {api_key}", "X-Conversation-Id": conversation_id},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
        )

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(turn, "FAULT:slow:3000")
        time.sleep(0.5)
        second = pool.submit(turn, "impatient")
        busy = second.result()
        assert first.result().status_code == 200
    slow.close()
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "conversation_busy"
    assert busy.json()["error"]["type"] == "conflict_error"
    assert len(stored(server, api_key, conversation_id)) == 2


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


def test_serve_with_an_unreachable_database_fails_in_one_line(tmp_path: Any) -> None:
    import subprocess
    import sys

    from tests.servers import base_env, free_port

    url = f"postgresql+asyncpg://nobody:s3cret@127.0.0.1:{free_port()}/none"
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", str(free_port()), "--database-url", url],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "cannot use the database" in result.stderr and "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr
