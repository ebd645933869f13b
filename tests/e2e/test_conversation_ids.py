"""X-Conversation-Id: valid and invalid ids, header case, no header (a plain pass-through), foreign ids, the
stored shapes."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.helpers import (
    ERROR_KEYS,
    MODEL,
    attempts,
    auth,
    chat,
    conversation,
    data_events,
    sdk,
    stored,
    user,
    without_created_at,
)
from tests.servers import ServerProcess, upstream_requests


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
