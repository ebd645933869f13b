"""Slow clients cannot hold connections: header and body read deadlines, and a connection limit.

Real sockets against `gateway serve` (the deadlines live in the HTTP server, which ASGITransport skips).
The deadlines are set short here; each test waits on a socket with a generous timeout, never on a clock.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.servers import ServerProcess, gateway_server

WAIT = 30.0  # far beyond the deadlines below: only a gateway that never closes reaches it


@pytest.fixture(scope="module")
def strict(upstream: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A gateway with 1 s header and body deadlines and room for 3 connections."""
    tmp = tmp_path_factory.mktemp("slow")
    settings = {"header_timeout": "1", "body_timeout": "1", "max_connections": "3"}
    server = gateway_server(tmp, upstream.url, f"sqlite+aiosqlite:///{tmp / 'slow.db'}", **settings).start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def connection(server: ServerProcess) -> Iterator[socket.socket]:
    """A raw TCP connection to the gateway."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    try:
        yield sock
    finally:
        sock.close()


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the gateway sends until it closes the connection (TimeoutError if it never does)."""
    received = b""
    while True:
        data = sock.recv(65536)
        if not data:
            return received
        received += data


def test_a_connection_that_sends_nothing_is_closed(strict: ServerProcess) -> None:
    with connection(strict) as sock:
        read_until_closed(sock)


def test_headers_sent_one_line_at_a_time_are_cut_off_with_408(strict: ServerProcess) -> None:
    with connection(strict) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n")
        received = b""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for line in range(200):  # one header line every 0.1 s: well past the 1 s deadline
                sock.sendall(f"X-Slow-{line}: {line}\r\n".encode())
                time.sleep(0.1)
        received = read_until_closed(sock)
        assert received.startswith(b"HTTP/1.1 408"), received


def test_a_body_that_stops_arriving_is_cut_off_with_408(strict: ServerProcess) -> None:
    with connection(strict) as sock:
        head = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer sk-slow\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        sock.sendall(head + b'{"model": "gpt-4o-mini", ')
        received = read_until_closed(sock)
        assert received.startswith(b"HTTP/1.1 408"), received
        assert b"request_timeout" in received


def test_a_normal_request_after_the_slow_ones_still_works(strict: ServerProcess) -> None:
    with connection(strict):
        pass
    response = httpx.get(strict.url + "/healthz", timeout=WAIT)
    assert response.status_code == 200


def test_connections_beyond_the_limit_are_answered_503(strict: ServerProcess) -> None:
    with connection(strict) as first, connection(strict) as second, connection(strict) as third:
        for sock in (first, second, third):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n")  # headers incomplete: held open
        with connection(strict) as fourth:
            fourth.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
            assert fourth.recv(65536).startswith(b"HTTP/1.1 503")
