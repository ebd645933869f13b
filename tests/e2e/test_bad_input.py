"""Bad input is an OpenAI-shaped 4xx that stores nothing and never reaches the upstream (never a 500)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.helpers import (
    ERROR_KEYS,
    MODEL,
    chat,
    sdk,
    stored,
    user,
)
from tests.servers import ServerProcess, upstream_requests


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
