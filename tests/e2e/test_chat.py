"""End-to-end: the real gateway in front of the mock upstream, driven by the official openai SDK."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.helpers import (
    ERROR_KEYS,
    MODEL,
    attempts,
    auth,
    chat,
    conversation,
    data_events,
    sdk,
    sent_messages,
    stored,
    user,
    without_created_at,
)
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


def test_healthz(gateway: ServerProcess) -> None:
    response = httpx.get(gateway.url + "/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


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


# --- full-history dedupe ------------------------------------------------------------------------------------


def _resend(message: Any, how: str) -> Any:
    if how == "object":
        return message
    if how == "model_dump":
        return message.model_dump()
    if how == "exclude_none":
        return message.model_dump(exclude_none=True)
    if how == "json_mode":
        return json.loads(message.model_dump_json())
    if how == "minimal":
        return {"role": "assistant", "content": message.content}
    if how == "extra_fields_ignored":
        return {
            "role": "assistant",
            "content": message.content,
            "refusal": "ignored",
            "annotations": [{"x": 1}],
        }
    if how == "null_name":
        return {"role": "assistant", "content": message.content, "name": None, "tool_calls": None}
    raise AssertionError(how)


RESENDS = [
    "object",
    "model_dump",
    "exclude_none",
    "json_mode",
    "minimal",
    "extra_fields_ignored",
    "null_name",
]


# --- GET /v1/conversations/{id} and /messages ------------------------------------------------------------


def test_conversation_and_messages_shapes(gateway: ServerProcess, api_key: str, conversation_id: str) -> None:
    client = sdk(gateway, api_key, conversation_id)
    before = time.time()
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Be brief."}, user("one")]
    )
    first = conversation(gateway, api_key, conversation_id).json()
    client.chat.completions.create(model=MODEL, messages=[user("two")])
    info = conversation(gateway, api_key, conversation_id)
    assert info.status_code == 200
    body = info.json()
    assert {"id", "object", "created_at", "updated_at", "system_prompt", "message_count"} <= set(body)
    assert body["id"] == conversation_id and body["object"] == "conversation"
    assert body["system_prompt"] == "Be brief." and body["message_count"] == 4
    assert isinstance(body["created_at"], int) and isinstance(body["updated_at"], int)
    assert before - 2 <= body["created_at"] <= body["updated_at"] <= time.time() + 2
    assert body["created_at"] == first["created_at"] and body["updated_at"] >= first["updated_at"]
    listing = httpx.get(f"{gateway.url}/v1/conversations/{conversation_id}/messages", headers=auth(api_key))
    assert listing.status_code == 200 and listing.json()["object"] == "list"
    data = listing.json()["data"]
    assert without_created_at(data) == [
        user("one"),
        {**without_created_at(data)[1], "role": "assistant", "content": "[2 messages] one"},
        user("two"),
        {**without_created_at(data)[3], "role": "assistant", "content": "[4 messages] two"},
    ]
    stamps = [m["created_at"] for m in data]
    assert all(isinstance(s, int) for s in stamps) and stamps == sorted(stamps)
    assert before - 2 <= stamps[0] <= time.time() + 2


@pytest.mark.parametrize("suffix", ["", "/messages"])
def test_unknown_or_foreign_conversation_is_an_openai_shaped_404(
    gateway: ServerProcess, api_key: str, conversation_id: str, suffix: str
) -> None:
    sdk(gateway, api_key, conversation_id).chat.completions.create(model=MODEL, messages=[user("x")])
    for key, cid in ((api_key, "never-used-" + conversation_id), ("sk-other-" + api_key, conversation_id)):
        response = httpx.get(f"{gateway.url}/v1/conversations/{cid}{suffix}", headers=auth(key))
        assert response.status_code == 404
        assert set(response.json()["error"]) == ERROR_KEYS
        assert response.json()["error"]["type"] == "invalid_request_error"


# --- X-Conversation-Id validation --------------------------------------------------------------------------


@pytest.mark.parametrize("cid", ["a", "x" * 128, "Az09._:-", "...", "::", "-"])
def test_valid_conversation_ids(gateway: ServerProcess, api_key: str, cid: str) -> None:
    reply = sdk(gateway, api_key, cid).chat.completions.create(model=MODEL, messages=[user("hi")])
    assert reply.choices[0].message.content == "[1 messages] hi"
    assert len(stored(gateway, api_key, cid)) == 2


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


# --- without the header: a plain pass-through --------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_without_header_nothing_is_added_and_the_call_is_logged(
    gateway: ServerProcess, upstream: ServerProcess, database_url: str, api_key: str, stream: bool
) -> None:
    body = {"model": MODEL, "messages": [user("stateless")], "stream": stream, "temperature": 0.5}
    response = chat(gateway, api_key, None, body)
    assert response.status_code == 200
    assert "x-conversation-id" not in response.headers
    assert upstream_requests(upstream, api_key)[-1]["body"] == body  # no stream_options added
    if stream:
        events = data_events(response.text)
        assert events[-1] == "[DONE]" and all('"usage": {' not in e for e in events)
    rows = attempts(database_url, api_key)
    assert len(rows) == 1 and rows[0]["conversation_id"] is None and rows[0]["status"] == 200
    # the same text sent again without the header is again a lone message: nothing was remembered
    chat(gateway, api_key, None, body)
    assert len(upstream_requests(upstream, api_key)[-1]["body"]["messages"]) == 1


# --- system / developer prompt ----------------------------------------------------------------------------


def test_several_leading_system_messages_replace_the_prompt_together(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    client = sdk(gateway, api_key, conversation_id)
    prompt = [{"role": "system", "content": "A"}, {"role": "developer", "content": "B"}]
    client.chat.completions.create(model=MODEL, messages=[*prompt, user("one")])
    client.chat.completions.create(model=MODEL, messages=[user("two")])
    assert sent_messages(upstream, api_key) == [
        *prompt,
        user("one"),
        sent_messages(upstream, api_key)[3],
        user("two"),
    ]
    client.chat.completions.create(model=MODEL, messages=[{"role": "system", "content": "C"}, user("three")])
    client.chat.completions.create(model=MODEL, messages=[user("four")])
    sent = sent_messages(upstream, api_key)
    assert sent[0] == {"role": "system", "content": "C"} and sent[1] == user("one")
    assert [m["role"] for m in sent].count("system") == 1 and "developer" not in [m["role"] for m in sent]
    body = conversation(gateway, api_key, conversation_id).json()
    assert body["message_count"] == 8 and len(stored(gateway, api_key, conversation_id)) == 8


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


@pytest.mark.parametrize("how", RESENDS)
def test_full_history_with_sdk_message_objects_is_not_doubled(
    gateway: ServerProcess,
    upstream: ServerProcess,
    api_key: str,
    conversation_id: str,
    how: str,
) -> None:
    client = sdk(gateway, api_key, conversation_id)
    history: list[Any] = [{"role": "system", "content": "sys"}, user("first")]
    reply = client.chat.completions.create(model=MODEL, messages=history)
    if how == "null_name":  # a missing field equals null (deduped, so OpenAI never sees the null)
        history[1] = {"role": "user", "content": "first", "name": None}
    history += [_resend(reply.choices[0].message, how), user("second")]
    reply = client.chat.completions.create(model=MODEL, messages=history)
    assert reply.choices[0].message.content == "[4 messages] second"
    history += [_resend(reply.choices[0].message, how), user("third")]
    reply = client.chat.completions.create(model=MODEL, messages=history)
    assert reply.choices[0].message.content == "[6 messages] third"
    assert [m["role"] for m in stored(gateway, api_key, conversation_id)] == ["user", "assistant"] * 3


@pytest.mark.parametrize("how", ["object", "model_dump", "exclude_none", "json_mode", "empty_content"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_full_history_with_tool_calls_is_not_doubled(
    gateway: ServerProcess, api_key: str, conversation_id: str, how: str, stream: bool
) -> None:
    client = sdk(gateway, api_key, conversation_id)
    history: list[Any] = [user("weather in Rome?")]
    if stream:
        chunks = list(client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS, stream=True))
        deltas = [
            c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls
        ]
        call = {
            "id": deltas[0].id,
            "type": "function",
            "function": {
                "name": deltas[0].function.name,
                "arguments": "".join(d.function.arguments or "" for d in deltas),
            },
        }
        # what a client assembling the stream itself (LangChain) sends back
        assistant: Any = {
            "role": "assistant",
            "content": "" if how == "empty_content" else None,
            "tool_calls": [call],
        }
        if how in ("model_dump", "json_mode"):
            assistant = {**assistant, "refusal": None, "function_call": None, "audio": None}
    else:
        message = (
            client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS).choices[0].message
        )
        assert message.tool_calls
        call = message.tool_calls[0].model_dump()
        assistant = (
            {"role": "assistant", "content": "", "tool_calls": [call]}
            if how == "empty_content"
            else _resend(message, how)
        )
    history += [assistant, {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]
    reply = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS)
    assert reply.choices[0].message.content == "[3 messages] tool result: sunny"
    messages = stored(gateway, api_key, conversation_id)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[1]["tool_calls"][0]["id"] == call["id"]
    assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == {"input": "weather in Rome?"}


@pytest.mark.parametrize(
    "change",
    ["edited_assistant", "prefix_only", "other_name", "other_role_order"],
)
def test_a_history_that_differs_is_all_new(
    gateway: ServerProcess,
    upstream: ServerProcess,
    api_key: str,
    conversation_id: str,
    change: str,
) -> None:
    client = sdk(gateway, api_key, conversation_id)
    reply = client.chat.completions.create(model=MODEL, messages=[user("one")])
    answer = {"role": "assistant", "content": reply.choices[0].message.content}
    resent = {
        "edited_assistant": [user("one"), {**answer, "content": "something else"}],
        "prefix_only": [user("one")],
        "other_name": [{**user("one"), "name": "bob"}, answer],
        "other_role_order": [answer, user("one")],
    }[change]
    if change == "other_role_order":
        resent = [user("zero"), *resent]
    client.chat.completions.create(model=MODEL, messages=[*resent, user("two")])
    sent = sent_messages(upstream, api_key)
    assert sent[:2] == [user("one"), answer]  # the stored history, then everything the client sent
    assert sent[2:] == [*resent, user("two")]
    assert len(stored(gateway, api_key, conversation_id)) == 2 + len(resent) + 2


# --- failures add nothing, and are logged ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "stream", "status"),
    [
        ("FAULT:500", False, 500),
        ("FAULT:503", True, 503),
        ("FAULT:400", False, 400),
        ("FAULT:429", True, 429),
        ("FAULT:garbage", False, 502),
        ("FAULT:reset", False, 502),
        ("FAULT:cut", False, 502),
        ("FAULT:cut", True, None),
        ("FAULT:reset", True, None),
        ("FAULT:garbage", True, None),
        ("FAULT:cut-after-usage", True, None),
    ],
)
def test_failures_add_nothing_and_are_logged(
    gateway: ServerProcess,
    database_url: str,
    api_key: str,
    conversation_id: str,
    fault: str,
    stream: bool,
    status: int | None,
) -> None:
    client = sdk(gateway, api_key, conversation_id, max_retries=0)
    client.chat.completions.create(model=MODEL, messages=[{"role": "system", "content": "S"}, user("hello")])
    before = stored(gateway, api_key, conversation_id)
    info_before = conversation(gateway, api_key, conversation_id).json()
    with pytest.raises(openai.APIError) as caught:
        result = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "system", "content": "NEW"}, user(f"please {fault}")],
            stream=stream,
        )
        if stream:
            for c in result:  # type: ignore[union-attr]
                assert not c.choices or c.choices[0].finish_reason is None
    if status is not None:
        assert isinstance(caught.value, openai.APIStatusError) and caught.value.status_code == status
    assert stored(gateway, api_key, conversation_id) == before
    info = conversation(gateway, api_key, conversation_id).json()
    assert info["system_prompt"] == "S" and info["message_count"] == info_before["message_count"]
    failed = attempts(database_url, api_key)[-1]
    assert failed["conversation_id"] == conversation_id
    assert failed["status"] != 200 and failed["error"]
    if status is not None:
        assert failed["status"] == status
    reply = client.chat.completions.create(model=MODEL, messages=[user("still?")])
    assert reply.choices[0].message.content == "[4 messages] still?"


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


# --- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[]",
        b'"just a string"',
        b"42",
        b"\xff\xfe not utf8",
        json.dumps({"model": MODEL}).encode(),
        json.dumps({"model": MODEL, "messages": []}).encode(),
        json.dumps({"model": MODEL, "messages": None}).encode(),
        json.dumps({"model": MODEL, "messages": "hi"}).encode(),
        json.dumps({"model": MODEL, "messages": {"role": "user", "content": "hi"}}).encode(),
        json.dumps({"model": MODEL, "messages": [None]}).encode(),
        json.dumps({"model": MODEL, "messages": [1, 2]}).encode(),
        json.dumps({"model": MODEL, "messages": [{"content": "no role"}]}).encode(),
        json.dumps({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}).encode(),
        json.dumps({"model": MODEL, "messages": [{"role": "user"}]}).encode(),
        json.dumps({"model": MODEL, "messages": [{"role": "user", "content": {"a": 1}}]}).encode(),
        json.dumps({"model": MODEL, "messages": [{"role": "tool", "content": "orphan"}]}).encode(),
        json.dumps({"model": MODEL, "messages": [{"role": "assistant", "tool_calls": "bad"}]}).encode(),
        json.dumps({"messages": [user("no model")]}).encode(),
        json.dumps({"model": MODEL, "messages": [user("x")], "stream": "yes"}).encode(),
        json.dumps({"model": MODEL, "messages": [user("x")], "stream": True, "stream_options": "x"}).encode(),
        json.dumps(
            {"model": MODEL, "messages": [{"role": "system", "content": "only a system prompt"}]}
        ).encode(),
    ],
)
@pytest.mark.parametrize("with_header", [True, False], ids=["conversation", "pass-through"])
def test_bad_input_is_an_openai_shaped_4xx_and_adds_nothing(
    gateway: ServerProcess, api_key: str, conversation_id: str, body: bytes, with_header: bool
) -> None:
    cid = conversation_id if with_header else None
    assert chat(gateway, api_key, cid, {"model": MODEL, "messages": [user("ok")]}).status_code == 200
    response = chat(gateway, api_key, cid, body)
    if b"only a system prompt" in body and response.status_code == 200:
        return  # a valid OpenAI request: the gateway may serve it
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()["error"]) == ERROR_KEYS
    if with_header:
        assert len(stored(gateway, api_key, conversation_id)) == 2
        again = chat(gateway, api_key, cid, {"model": MODEL, "messages": [user("again")]})
        assert again.json()["choices"][0]["message"]["content"] == "[3 messages] again"


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        json.dumps({"model": MODEL}).encode(),
        json.dumps({"model": MODEL, "messages": []}).encode(),
    ],
    ids=["bad-json", "missing-messages", "empty-messages"],
)
def test_bad_json_and_missing_messages_are_400(
    gateway: ServerProcess, api_key: str, conversation_id: str, body: bytes
) -> None:
    for cid in (conversation_id, None):
        response = chat(gateway, api_key, cid, body)
        assert response.status_code == 400, response.text
        assert set(response.json()["error"]) == ERROR_KEYS


# --- header names, LangChain-style clients -----------------------------------------------------------------


def test_header_names_in_any_case(gateway: ServerProcess, api_key: str, conversation_id: str) -> None:
    for index, (auth_name, cid_name) in enumerate(
        [
            ("authorization", "x-conversation-id"),
            ("AUTHORIZATION", "X-CONVERSATION-ID"),
            ("AuThOrIzAtIoN", "x-CoNvErSaTiOn-Id"),
        ]
    ):
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            headers={auth_name: f"Bearer {api_key}", cid_name: conversation_id},
            json={"model": MODEL, "messages": [user(f"t{index}")]},
        )
        assert response.status_code == 200
        assert response.headers["X-Conversation-Id"] == conversation_id
        assert response.json()["choices"][0]["message"]["content"] == f"[{2 * index + 1} messages] t{index}"
    assert len(stored(gateway, api_key, conversation_id)) == 6


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


# --- persistence -------------------------------------------------------------------------------------------


def test_history_survives_a_restart(
    start_gateway: Callable[..., ServerProcess],
    database_url: str,
    api_key: str,
    conversation_id: str,
) -> None:
    server = start_gateway(database_url, process=True)
    sdk(server, api_key, conversation_id).chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "S"}, user("remember")]
    )
    server.restart()
    reply = sdk(server, api_key, conversation_id).chat.completions.create(model=MODEL, messages=[user("?")])
    assert reply.choices[0].message.content == "[4 messages] ?"
    assert conversation(server, api_key, conversation_id).json()["system_prompt"] == "S"


def test_different_conversations_do_not_wait_for_a_slow_one(
    gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    async def run() -> None:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
            slow = asyncio.create_task(
                http.post(
                    "/v1/chat/completions",
                    headers=auth(api_key, conversation_id),
                    json={"model": MODEL, "messages": [user("FAULT:slow:3000")]},
                )
            )
            await asyncio.sleep(0.3)
            fast = await http.post(
                "/v1/chat/completions",
                headers=auth(api_key, conversation_id + "-other"),
                json={"model": MODEL, "messages": [user("quick")]},
            )
            assert fast.status_code == 200 and not slow.done()  # answered while the slow turn is in flight
            assert (await slow).status_code == 200

    asyncio.run(run())


@pytest.mark.parametrize(
    "text", ["\\ud800 alone", "tail \\udfff", "pair \\ud83d\\ude00 ok"], ids=["high", "low", "pair"]
)
def test_escaped_surrogates_are_a_400_or_work_never_a_500(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str, text: str
) -> None:
    """A lone UTF-16 surrogate escape is not Unicode: a clear 400 before the upstream; a pair is an emoji."""
    assert (
        chat(gateway, api_key, conversation_id, {"model": MODEL, "messages": [user("first")]}).status_code
        == 200
    )
    raw = (
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "first"}, {"role": "assistant", '
    )
    raw += b'"content": "[1 messages] first"}, {"role": "user", "content": "' + text.encode() + b'"}]}'
    response = chat(gateway, api_key, conversation_id, raw)
    if "pair" in text:
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "[3 messages] pair \U0001f600 ok"
        return
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_json"
    assert len(upstream_requests(upstream, api_key)) == 1
    assert len(stored(gateway, api_key, conversation_id)) == 2


def test_resending_exactly_the_stored_history_does_not_double_it(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    client = sdk(gateway, api_key, conversation_id)
    reply = client.chat.completions.create(model=MODEL, messages=[user("one")])
    history = [user("one"), {"role": "assistant", "content": reply.choices[0].message.content}]
    client.chat.completions.create(model=MODEL, messages=history)
    assert sent_messages(upstream, api_key) == history


def test_sdk_retries_a_409_busy_turn_and_it_works(
    start_gateway: Callable[..., ServerProcess],
    tmp_path: Any,
    api_key: str,
    conversation_id: str,
) -> None:
    server = start_gateway(f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}", lock_timeout="1")
    slow = sdk(server, api_key, conversation_id, max_retries=0)
    patient = sdk(server, api_key, conversation_id, max_retries=2)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(slow.chat.completions.create, model=MODEL, messages=[user("FAULT:slow:2000")])
        time.sleep(0.3)
        raw = patient.chat.completions.with_raw_response.create(model=MODEL, messages=[user("second")])
        first.result()
    assert raw.retries_taken >= 1  # it did get a 409 first
    assert raw.parse().choices[0].message.content == "[3 messages] second"
    assert [m["content"] for m in stored(server, api_key, conversation_id)][2:] == [
        "second",
        "[3 messages] second",
    ]


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
