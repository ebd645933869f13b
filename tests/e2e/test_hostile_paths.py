"""The real gateway process (uvicorn, aiohttp transport) with raw requests on a socket: paths and headers.

Raw sockets, because every HTTP client normalizes `..` away before sending; the scripted upstream records the
exact request target it receives.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.scripted_upstream import ScriptedUpstream
from tests.servers import ServerProcess, gateway_server

UPSTREAM_KEY = "sk-held-by-the-gateway-e2e"
ADMIN = "admin-e2e-paths"


@pytest.fixture(scope="module")
def held(
    scripted: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, str]]:
    """A gateway holding the upstream key, before the scripted upstream at /openai/v1, and a gateway key."""
    folder = tmp_path_factory.mktemp("paths")
    database = f"sqlite+aiosqlite:///{folder / 'paths.db'}"
    server = gateway_server(
        folder, scripted.url + "/openai/v1", database, upstream_api_key=UPSTREAM_KEY, admin_key=ADMIN
    ).start()
    try:
        admin = {"authorization": f"Bearer {ADMIN}"}
        created = httpx.post(server.url + "/admin/keys", json={"name": "k"}, headers=admin)
        yield server, created.json()["secret"]
    finally:
        server.stop()


def raw(server: ServerProcess, target: bytes, headers: bytes = b"") -> tuple[int, bytes]:
    """Send `GET target` exactly as given; the status and body of the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall(b"GET " + target + b" HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n" + headers + b"\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    "target",
    [
        b"/v1/../internal/billing",
        b"/v1/%2e%2e/x",
        b"/v1/..%2f..%2fx",
        b"/v1/a%00b",
        b"/v1/a%7Fb",
        b"/v1/%2E%2E/x",
    ],
)
def test_no_path_leaves_the_upstream_base_with_the_gateway_key(
    held: tuple[ServerProcess, str], scripted: ScriptedUpstream, target: bytes
) -> None:
    server, key = held
    before = len(scripted.received())
    status, body = raw(server, target, f"authorization: Bearer {key}\r\n".encode())
    assert 400 <= status < 500, body
    assert len(scripted.received()) == before  # the upstream never saw it, nor the gateway's key


def test_a_path_goes_upstream_byte_for_byte_below_the_base(
    held: tuple[ServerProcess, str], scripted: ScriptedUpstream
) -> None:
    server, key = held
    status, body = raw(
        server, b"/v1/models/ft%3Agpt-4o%3Aacme%41?x=%2F%41", f"authorization: Bearer {key}\r\n".encode()
    )
    assert status == 200, body
    received = scripted.received()[-1]
    assert received.target == "/openai/v1/models/ft%3Agpt-4o%3Aacme%41?x=%2F%41"
    assert received.token == UPSTREAM_KEY


def test_non_ascii_header_values_and_log_forgery_are_refused(
    held: tuple[ServerProcess, str], scripted: ScriptedUpstream
) -> None:
    server, key = held
    auth = f"authorization: Bearer {key}\r\n".encode()
    status, body = raw(server, b"/v1/models", auth + b"x-note: caf\xe9\r\n")
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_header"
    raw(server, b"/v1/models%C2%85FORGED-LINE", auth + b"x-conversation-id: a\xc2\x85FORGED-LINE-2\r\n")
    log = server.log()
    assert "FORGED-LINE" in log
    for line in log.splitlines():  # Python's splitlines splits on NEL, U+2028 and U+2029 too
        assert not line.startswith("FORGED-LINE"), line
