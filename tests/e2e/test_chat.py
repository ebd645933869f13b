"""End-to-end: the real gateway in front of the mock upstream, driven by the official openai SDK."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.helpers import (
    MODEL,
    TOOLS,
    attempts,
    conversation,
    roles,
    sdk,
    sent_messages,
    stored,
    user,
)
from tests.servers import ServerProcess, upstream_requests


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


def test_other_endpoints_pass_through(gateway: ServerProcess, api_key: str) -> None:
    client = sdk(gateway, api_key, None)
    assert [m.id for m in client.models.list().data][:2] == ["gpt-4o-mini", "gpt-4o"]
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    embedding = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(embedding.data) == 2


def test_healthz(gateway: ServerProcess) -> None:
    response = httpx.get(gateway.url + "/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


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
