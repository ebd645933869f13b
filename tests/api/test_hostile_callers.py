"""Small hostile-caller findings, in process: each a clear 4xx (never a 500), no secret forwarded upstream."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.logs import JsonFormatter, TextFormatter
from gateway.mock_upstream.app import create_mock_app
from tests.inprocess import Gateway, bearer, raw_request, running_gateway

ADMIN = "admin-secret-for-tests"
METRICS = "metrics-secret-for-tests"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    """Pass-through gateway before the mock upstream, with an admin key."""
    upstream = httpx.ASGITransport(app=create_mock_app())
    async with running_gateway(tmp_path, upstream, admin_key=ADMIN) as gw:
        yield gw


def _auth_header_values(gateway: Gateway) -> list[str]:
    return [value for request in gateway.sent for value in request.headers.values()]


async def test_the_admin_key_is_never_forwarded_upstream(gateway: Gateway) -> None:
    client = gateway.client
    chat = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(ADMIN))
    proxied = await client.get("/v1/models", headers=bearer(ADMIN))
    created = await client.post("/v1/conversations", json={}, headers=bearer(ADMIN))
    for response in (chat, proxied, created):
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "invalid_api_key"
    smuggled = await client.get("/v1/models", headers={**bearer("sk-caller"), "x-api-key": ADMIN})
    assert smuggled.status_code == 200
    assert not any(ADMIN in value for value in _auth_header_values(gateway))
    assert (await client.get("/admin/keys", headers=bearer(ADMIN))).status_code == 200  # still the admin


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/models"])
async def test_a_non_ascii_header_value_is_a_400(gateway: Gateway, path: str) -> None:
    headers = [
        (b"authorization", b"Bearer sk-caller"),
        (b"x-note", b"caf\xe9"),
        (b"content-type", b"application/json"),
    ]
    method = "GET" if path == "/v1/models" else "POST"
    body = b'{"model": "text-embedding-3-small", "input": "hi"}' if path == "/v1/embeddings" else b""
    if path == "/v1/chat/completions":
        body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    response = await raw_request(gateway, method, path.encode(), headers, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_header" and error["param"] == "x-note"
    assert gateway.sent == []


@pytest.mark.parametrize("target", [b"/v1/a%00b", b"/v1/a%7Fb", b"/v1/files/a%0Ab"])
async def test_control_characters_in_a_proxied_path_are_a_400(gateway: Gateway, target: bytes) -> None:
    response = await raw_request(gateway, "GET", target, [(b"authorization", b"Bearer sk-caller")])
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_path"
    assert gateway.sent == []


async def test_metrics_need_the_metrics_key_when_one_is_set(tmp_path: Path) -> None:
    upstream = httpx.ASGITransport(app=create_mock_app())
    async with running_gateway(tmp_path, upstream, admin_key=ADMIN, metrics_key=METRICS) as gateway:
        await _metrics_need_the_key(gateway.client)


async def _metrics_need_the_key(client: httpx.AsyncClient) -> None:
    for headers in ({}, bearer("wrong"), bearer(ADMIN), bearer(METRICS + " x")):
        response = await client.get("/metrics", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["type"] == "authentication_error"
        assert "gateway_cost_usd_total" not in response.text
    response = await client.get("/metrics", headers=bearer(METRICS))
    assert response.status_code == 200 and "gateway_requests_total" in response.text


async def test_metrics_stay_open_without_a_metrics_key(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, httpx.ASGITransport(app=create_mock_app())) as gateway:
        assert (await gateway.client.get("/metrics")).status_code == 200


@pytest.mark.parametrize("suffix", [b"\x85", b"\xa0", b"\xc2\x85", b"\xe2\x80\xa8"])
async def test_only_ascii_whitespace_is_trimmed_from_a_bearer_token(tmp_path: Path, suffix: bytes) -> None:
    upstream = httpx.ASGITransport(app=create_mock_app())
    async with running_gateway(tmp_path, upstream, upstream_api_key="sk-held", admin_key=ADMIN) as gateway:
        created = await gateway.client.post("/admin/keys", json={"name": "k"}, headers=bearer(ADMIN))
        secret = created.json()["secret"]
        padded = f"Bearer  {secret} \t".encode()
        ok = await raw_request(gateway, "GET", b"/v1/models", [(b"authorization", padded)])
        assert ok.status_code == 200, ok.text
        header = f"Bearer {secret}".encode() + suffix
        refused = await raw_request(gateway, "GET", b"/v1/models", [(b"authorization", header)])
        assert refused.status_code in (400, 401), refused.text


def _record(message: str, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, message, None, None)
    record.fields = fields
    return record


BREAKS = ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_no_log_field_can_break_a_line(formatter: logging.Formatter) -> None:
    forged = "x" + "".join(f"{b}INFO forged line {n}" for n, b in enumerate(BREAKS))
    line = formatter.format(_record(f"request {forged}", path=f"/v1/{forged}", conversation_id=forged))
    assert line.splitlines() == [line]
    assert not any(b in line for b in BREAKS)


async def test_the_access_log_escapes_line_breaks_from_the_path_and_headers(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    headers = [(b"authorization", b"Bearer sk-caller"), (b"x-conversation-id", b"a\x85INFO forged")]
    await raw_request(gateway, "GET", b"/v1/models%C2%85INFO%E2%80%A8forged", headers)
    (record,) = [r for r in caplog.records if r.name == "gateway.access"]
    for formatter in (TextFormatter(), JsonFormatter()):
        line = formatter.format(record)
        assert line.splitlines() == [line], line
