"""Upstream faults beyond test_chat's: each is a clear error, adds nothing, and the gateway keeps serving."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import data_events, stored, turn_body, turn_headers
from tests.servers import ServerProcess, free_port, gateway_app

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def fault_gateway(
    upstream: ServerProcess, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A gateway with a short upstream timeout (stalls) and the default 16 MiB response limit."""
    server = gateway_app(upstream.url, database_url, upstream_timeout="1.5").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain HTTP client with a generous timeout."""
    with httpx.Client(timeout=30) as client:
        yield client


# (fault, stream, status, error type, error code): what the client sees. A stream that already answered 200
# ends with an error event instead of [DONE]; an upstream error status is passed through as it came.
CASES = [
    ("FAULT:503", False, 503, "server_error", None),
    ("FAULT:429", False, 429, "requests", "rate_limit_exceeded"),
    ("FAULT:429", True, 429, "requests", "rate_limit_exceeded"),
    ("FAULT:500", True, 500, "server_error", None),
    ("FAULT:reset", True, 200, "upstream_error", "upstream_unreachable"),
    ("FAULT:stall", False, 504, "upstream_error", "upstream_timeout"),
    ("FAULT:stall-stream", True, 200, "upstream_error", "upstream_timeout"),
    (f"FAULT:huge:{17 * MIB}", False, 502, "upstream_error", "upstream_unreachable"),
    (f"FAULT:huge:{17 * MIB}", True, 200, "upstream_error", "upstream_unreachable"),
]


@pytest.mark.parametrize(("fault", "stream", "status", "error_type", "code"), CASES)
def test_upstream_fault_is_a_clear_error_and_adds_nothing(
    fault_gateway: ServerProcess,
    http: httpx.Client,
    api_key: str,
    conversation_id: str,
    fault: str,
    stream: bool,
    status: int,
    error_type: str,
    code: str | None,
) -> None:
    url = f"{fault_gateway.url}/v1/chat/completions"
    headers = turn_headers(api_key, conversation_id)
    assert http.post(url, json=turn_body("hello"), headers=headers).status_code == 200
    before = stored(fault_gateway, api_key, conversation_id)
    response = http.post(url, json=turn_body(f"please {fault}", stream=stream), headers=headers)
    assert response.status_code == status
    if status == 200:  # the stream had started: it ends with an error event, never a finish or [DONE]
        payloads = data_events(response.text)
        assert "[DONE]" not in payloads
        error = json.loads(payloads[-1])["error"]
        assert all(
            c["choices"][0]["finish_reason"] is None
            for c in map(json.loads, payloads[:-1])
            if c.get("choices")
        )
    else:
        error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert (error["type"], error["code"]) == (error_type, code)
    if fault == "FAULT:429":
        assert response.headers["retry-after"] == "7"
    if "huge" in fault:
        assert "limit" in error["message"]
    assert stored(fault_gateway, api_key, conversation_id) == before
    reply = http.post(url, json=turn_body("still there?"), headers=headers)
    assert reply.json()["choices"][0]["message"]["content"] == "[3 messages] still there?"


def test_a_large_reply_within_the_limit_is_stored(
    fault_gateway: ServerProcess, http: httpx.Client, api_key: str, conversation_id: str
) -> None:
    url = f"{fault_gateway.url}/v1/chat/completions"
    for stream in (False, True):
        response = http.post(
            url,
            json=turn_body(f"FAULT:huge:{MIB}", stream=stream),
            headers=turn_headers(api_key, conversation_id),
        )
        assert response.status_code == 200
    messages = stored(fault_gateway, api_key, conversation_id)
    assert [len(m["content"]) for m in messages[1::2]] == [MIB, MIB]


def test_refused_connection_adds_nothing_and_the_gateway_keeps_serving(
    fault_gateway: ServerProcess,
    start_gateway: Callable[..., ServerProcess],
    database_url: str,
    http: httpx.Client,
    api_key: str,
    conversation_id: str,
    tmp_path: Path,
) -> None:
    live = f"{fault_gateway.url}/v1/chat/completions"
    headers = turn_headers(api_key, conversation_id)
    http.post(live, json=turn_body("hello"), headers=headers)
    # a second gateway on the same database whose upstream is a closed port
    dead = start_gateway(database_url, upstream_url=f"http://127.0.0.1:{free_port()}")
    for stream in (False, True):
        response = http.post(
            f"{dead.url}/v1/chat/completions", json=turn_body("anyone?", stream=stream), headers=headers
        )
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "upstream_unreachable"
    assert [m["content"] for m in stored(dead, api_key, conversation_id)] == ["hello", "[1 messages] hello"]
    assert http.get(f"{dead.url}/healthz").status_code == 200
    reply = http.post(live, json=turn_body("again"), headers=headers)
    assert reply.json()["choices"][0]["message"]["content"] == "[3 messages] again"
