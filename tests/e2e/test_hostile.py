"""End-to-end: hostile and malformed input against the real gateway (pass-through mode unless stated)."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import OpenAI

from tests.hostile import assert_well_formed_error, chat_bodies, chat_headers, row_counts
from tests.servers import ServerProcess, gateway_app, upstream_requests

USER = [{"role": "user", "content": "hi"}]


def post(
    server: ServerProcess,
    body: Any = None,
    content: Any = None,
    path: str = "/v1/chat/completions",
    token: str = "sk-test-hostile",
    **headers: str,
) -> httpx.Response:
    """POST to the gateway with a bearer token and extra headers."""
    return httpx.post(
        server.url + path,
        json=body,
        content=content,
        timeout=30,
        headers={"Authorization": f"Bearer {token}", **headers},
    )


def rows(database_url: str) -> dict[str, int]:
    """Row counts of every table."""
    return asyncio.run(row_counts(database_url)).counts


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("conversation", [None, "conv-rejected"])
def test_a_token_the_upstream_rejects_creates_nothing(
    gateway: ServerProcess, database_url: str, stream: bool, conversation: str | None
) -> None:
    token = f"sk-bad-{secrets.token_hex(4)}"
    before = rows(database_url)
    headers = {"X-Conversation-Id": conversation} if conversation else {}
    response = post(
        gateway, {"model": "gpt-4o-mini", "messages": USER, "stream": stream}, token=token, **headers
    )
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    models = httpx.get(gateway.url + "/v1/models", headers={"Authorization": f"Bearer {token}"})
    assert models.status_code == 401
    assert rows(database_url) == before  # no conversation, no message, not even a request-log row
    if conversation:
        response = httpx.get(
            f"{gateway.url}/v1/conversations/{conversation}", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 404


def test_no_token_is_a_401_from_the_gateway(gateway: ServerProcess, upstream: ServerProcess) -> None:
    before = len(upstream_requests(upstream))
    for path in ("/v1/chat/completions", "/v1/conversations/x", "/v1/models"):
        response = httpx.request(
            "POST" if "chat" in path else "GET", gateway.url + path, json={"messages": USER}
        )
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert len(upstream_requests(upstream)) == before


@pytest.fixture(scope="module")
def small_limit(
    upstream: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, str]]:
    """A gateway whose body limit is 2 KiB (SQLite: the limit is enforced before any storage)."""
    tmp = tmp_path_factory.mktemp("limit")
    database_url = f"sqlite+aiosqlite:///{tmp / 'limit.db'}"
    server = gateway_app(upstream.url, database_url, max_body_bytes="2048").start()
    try:
        yield server, database_url
    finally:
        server.stop()


def _chunks(total: int) -> Iterator[bytes]:
    yield b'{"model": "gpt-4o-mini", "input": "'
    for _ in range(total // 512):
        yield b"a" * 512
    yield b'"}'


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_bodies_over_the_limit_are_413(
    small_limit: tuple[ServerProcess, str], upstream: ServerProcess, path: str, chunked: bool
) -> None:
    server, database_url = small_limit
    before, calls = rows(database_url), len(upstream_requests(upstream))
    big = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 4096}], "input": "x"}
    response = post(
        server,
        content=_chunks(1 << 20) if chunked else json.dumps(big).encode(),
        path=path,
        **{"Content-Type": "application/json", "X-Conversation-Id": "big"},
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "request_too_large"
    assert rows(database_url) == before and len(upstream_requests(upstream)) == calls
    small = post(server, {"model": "gpt-4o-mini", "messages": USER}, **{"X-Conversation-Id": "big"})
    assert small.status_code == 200  # the gateway keeps serving


BAD_REQUESTS: list[tuple[dict[str, str], Any, str | None, str]] = [
    ({}, {"model": "m"}, "messages", "invalid_request"),
    ({}, {"model": "m", "messages": "hello"}, "messages", "invalid_type"),
    ({}, {"model": "m", "messages": []}, "messages", "empty_array"),
    ({}, {"model": "m", "messages": ["hi"]}, "messages[0]", "invalid_type"),
    ({}, {"model": "m", "messages": [{"content": "no role"}]}, "messages[0].role", "invalid_request"),
    (
        {},
        {"model": "m", "messages": [{"role": "wizard", "content": "x"}]},
        "messages[0].role",
        "invalid_value",
    ),
    (
        {},
        {"model": "m", "messages": [{"role": "user", "content": 42}]},
        "messages[0].content",
        "invalid_type",
    ),
    ({}, {"model": "m", "messages": [{"role": "user"}]}, "messages[0].content", "invalid_request"),
    (
        {},
        {"model": "m", "messages": [{"role": "user", "content": [{"text": "x"}]}]},
        "messages[0].content[0]",
        "invalid_type",
    ),
    (
        {},
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": {}}]}]},
        "messages[0].content[0].text",
        "invalid_type",
    ),
    (
        {},
        {"model": "m", "messages": [{"role": "assistant", "content": None, "tool_calls": "f"}]},
        "messages[0].tool_calls",
        "invalid_type",
    ),
    (
        {},
        {"model": "m", "messages": [{"role": "tool", "content": "x", "tool_call_id": 7}]},
        "messages[0].tool_call_id",
        "invalid_type",
    ),
    ({}, {"model": "m", "messages": USER, "stream": "true"}, "stream", "invalid_type"),
    ({}, {"model": "m", "messages": USER, "stream_options": "usage"}, "stream_options", "invalid_type"),
    (
        {},
        {"model": "m", "messages": USER, "stream_options": {"include_usage": 1}},
        "stream_options.include_usage",
        "invalid_type",
    ),
    ({}, {"model": "m", "messages": USER, "tools": {"type": "function"}}, "tools", "invalid_type"),
    ({}, {"model": "m", "messages": USER, "tools": ["get_weather"]}, "tools[0]", "invalid_type"),
    ({}, {"model": 4, "messages": USER}, "model", "invalid_type"),
    ({}, {"model": "m" * 201, "messages": USER}, "model", "invalid_value"),
    ({}, b"{not json", None, "invalid_json"),
    ({}, b'{"model": "m", "messages": [], "x": NaN}', None, "invalid_json"),
    ({}, b'{"model": "m", "messages": [{"role": "user", "content": "\\udc00"}]}', None, "invalid_json"),
    ({}, b"[" * 50_000, None, "invalid_json"),
    ({}, [USER], None, "invalid_json"),
    (
        {"X-Conversation-Id": ""},
        {"model": "m", "messages": USER},
        "X-Conversation-Id",
        "invalid_conversation_id",
    ),
    (
        {"X-Conversation-Id": "x" * 129},
        {"model": "m", "messages": USER},
        "X-Conversation-Id",
        "invalid_conversation_id",
    ),
    (
        {"X-Conversation-Id": "a%0d%0aSet-Cookie: x=1"},
        {"model": "m", "messages": USER},
        "X-Conversation-Id",
        "invalid_conversation_id",
    ),
    (
        {"X-Max-History-Messages": "-1"},
        {"model": "m", "messages": USER},
        "X-Max-History-Messages",
        "invalid_header",
    ),
    (
        {"X-Max-History-Messages": "1e3"},
        {"model": "m", "messages": USER},
        "X-Max-History-Messages",
        "invalid_header",
    ),
    (
        {"X-Max-History-Tokens": "9999999999"},
        {"model": "m", "messages": USER},
        "X-Max-History-Tokens",
        "invalid_header",
    ),
    ({"Idempotency-Key": "k" * 257}, {"model": "m", "messages": USER}, "Idempotency-Key", "invalid_header"),
]


@pytest.mark.parametrize(("headers", "body", "param", "code"), BAD_REQUESTS)
def test_every_bad_request_is_a_400_naming_the_field(
    gateway: ServerProcess,
    upstream: ServerProcess,
    database_url: str,
    headers: dict[str, str],
    body: Any,
    param: str | None,
    code: str,
) -> None:
    token = f"sk-test-{secrets.token_hex(4)}"
    before = rows(database_url)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = post(gateway, content=raw, token=token, **{"Content-Type": "application/json", **headers})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert "set-cookie" not in response.headers and "x-conversation-id" not in response.headers
    assert upstream_requests(upstream, token) == [] and rows(database_url) == before


def test_header_injection_through_a_raw_socket_is_refused(gateway: ServerProcess) -> None:
    """A bare CR or a NEL inside the id never comes back as a header of its own."""
    body = json.dumps({"model": "gpt-4o-mini", "messages": USER}).encode()
    for value in (b"a\rSet-Cookie: x=1", b"a\x85Set-Cookie: x=1", b"a\x00b"):
        request = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer sk-test-raw\r\n"
            b"Content-Type: application/json\r\nX-Conversation-Id: " + value + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
        )
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 400"), head
        assert b"set-cookie" not in head


FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@given(data=st.data())
@FUZZ
def test_fuzzed_requests_against_the_real_server(
    gateway: ServerProcess, database_url: str, data: Any
) -> None:
    token = "sk-test-fuzz-real"
    headers = data.draw(chat_headers([f"Bearer {token}", "", "Bearer sk-bad-x"]))
    body = data.draw(chat_bodies())
    before = rows(database_url)
    response = httpx.post(gateway.url + "/v1/chat/completions", content=body, headers=headers, timeout=30)
    assert response.status_code < 500 or response.status_code in (502, 504), response.text
    assert_well_formed_error(response.status_code, response.content)
    changes = {k: v - before[k] for k, v in rows(database_url).items() if v != before[k]}
    # The mock stamps every answer (errors too) with `x-request-id: req_<hex>` and the gateway passes it on:
    # without one, the gateway refused the request itself, and then nothing at all may be stored.
    upstream_answered = response.headers.get("x-request-id", "").startswith("req_")
    upstream_answered |= response.status_code in (502, 504)
    if response.status_code >= 400 and not upstream_answered:
        assert changes == {}, (response.text, changes)
    elif response.status_code >= 400:
        assert set(changes) <= {"attempts"}, (response.text, changes)


def test_correct_requests_work_after_the_fuzz(gateway: ServerProcess, conversation_id: str) -> None:
    with OpenAI(
        base_url=gateway.url + "/v1",
        api_key="sk-test-fuzz-real",
        max_retries=0,
        default_headers={"X-Conversation-Id": conversation_id},
    ) as client:
        for turn in (1, 2):
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "ok"}]
            )
            assert reply.choices[0].message.content == f"[{2 * turn - 1} messages] ok"
    assert httpx.get(gateway.url + "/healthz").status_code == 200
