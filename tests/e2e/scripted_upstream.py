"""A scripted fake upstream for end-to-end tests: raw HTTP/1.1, every request recorded byte for byte.

The built-in mock records parsed JSON; this one keeps the raw bytes, the exact path and query, and answers
from a per-caller script (keyed by the bearer token), so a test can make the upstream fail once and then
succeed, send any SSE framing, or cut a chunked body in the middle.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

CHUNK_ID = "chatcmpl-scripted"


@dataclass
class Recorded:
    """One request as the upstream received it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        """The path without the query string."""
        return self.target.split("?", 1)[0]

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    @property
    def token(self) -> str:
        """The bearer token it carried ("" when none)."""
        return self.headers.get("authorization", "").partition(" ")[2]


Action = Callable[[socket.socket, Recorded], bool]  # returns whether the connection may be kept alive


def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} X\r\n".encode()


def respond(
    status: int, body: bytes | dict[str, Any], headers: dict[str, str] | None = None, delay: float = 0.0
) -> Action:
    """Answer once with `status` and `body` (bytes sent exactly; a dict as JSON), after `delay` seconds."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    extra = {"content-type": "application/json", **(headers or {})}

    def act(conn: socket.socket, _: Recorded) -> bool:
        time.sleep(delay)
        head = _status_line(status) + f"content-length: {len(raw)}\r\n".encode()
        head += b"".join(f"{k}: {v}\r\n".encode() for k, v in extra.items())
        conn.sendall(head + b"\r\n" + raw)
        return True

    return act


def close_connection() -> Action:
    """Close the connection without answering."""

    def act(conn: socket.socket, _: Recorded) -> bool:
        return False

    return act


def sse(
    events: Iterable[bytes | float],
    *,
    end: str = "complete",
    headers: dict[str, str] | None = None,
) -> Action:
    """Stream `events` (raw bytes, or a float = seconds to sleep) in a chunked body.

    end: "complete" (terminating chunk), "cut" (close mid-body, no terminating chunk).
    """
    items = list(events)
    extra = {"content-type": "text/event-stream", **(headers or {})}

    def act(conn: socket.socket, _: Recorded) -> bool:
        head = _status_line(200) + b"transfer-encoding: chunked\r\n"
        head += b"".join(f"{k}: {v}\r\n".encode() for k, v in extra.items())
        conn.sendall(head + b"\r\n")
        for item in items:
            if isinstance(item, float):
                time.sleep(item)
                continue
            conn.sendall(f"{len(item):x}\r\n".encode() + item + b"\r\n")
        if end == "cut":
            return False
        conn.sendall(b"0\r\n\r\n")
        return True

    return act


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    """A chat.completion.chunk object with one choice (or the given `choices`/`usage`)."""
    body: dict[str, Any] = {
        "id": CHUNK_ID,
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "scripted-model",
    }
    if "choices" in extra:
        body["choices"] = extra.pop("choices")
    else:
        body["choices"] = [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}]
    body.update(extra)
    return body


def event(obj: dict[str, Any] | str) -> bytes:
    """One `data:` event."""
    text = obj if isinstance(obj, str) else json.dumps(obj)
    return f"data: {text}\n\n".encode()


USAGE = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}


def completion(
    message: dict[str, Any], *, usage: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """A chat.completion object whose choice 0 carries `message`."""
    body: dict[str, Any] = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "scripted-model",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": usage or USAGE,
    }
    body.update(extra)
    return body


def echo_text(messages: list[dict[str, Any]]) -> str:
    """Like the built-in mock: how many messages arrived and the last one's text."""
    last = messages[-1].get("content") if messages else ""
    return f"[{len(messages)} messages] {last if isinstance(last, str) else json.dumps(last)}"


def default_action(request: Recorded) -> Action:
    """The answer when nothing is scripted: an echo completion (or stream), or a small JSON."""
    if request.method == "POST" and request.path.endswith("/chat/completions"):
        body = request.json()
        text = echo_text(body.get("messages", []))
        if body.get("stream"):
            events = [
                event(chunk({"role": "assistant", "content": ""})),
                event(chunk({"content": text})),
                event(chunk({}, "stop")),
            ]
            if (body.get("stream_options") or {}).get("include_usage"):
                events.append(event(chunk(choices=[], usage=USAGE)))
            return sse([*events, event("[DONE]")])
        return respond(200, completion({"role": "assistant", "content": text, "refusal": None}))
    return respond(200, {"object": "echo", "method": request.method, "target": request.target})


@dataclass
class ScriptedUpstream:
    """A threaded raw-socket HTTP/1.1 server on 127.0.0.1 with a per-token script of answers."""

    requests: list[Recorded] = field(default_factory=list)
    scripts: dict[str, deque[Action]] = field(default_factory=dict)
    _sock: socket.socket | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closing: bool = False
    _conns: list[socket.socket] = field(default_factory=list)

    def start(self) -> ScriptedUpstream:
        """Listen on a free port and accept in a background thread."""
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        """Base URL without a path."""
        assert self._sock is not None
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def script(self, token: str, *actions: Action) -> None:
        """Queue answers for requests carrying `Bearer token`, used in order, then the default."""
        with self._lock:
            self.scripts.setdefault(token, deque()).extend(actions)

    def received(self, token: str | None = None) -> list[Recorded]:
        """What arrived (from the caller with `token`, when given), oldest first."""
        with self._lock:
            return [r for r in self.requests if token is None or r.token == token]

    def stop(self) -> None:
        """Stop accepting and close every connection."""
        self._closing = True
        if self._sock is not None:
            self._sock.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.close()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._closing:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            while True:
                request = _read_request(reader)
                if request is None:
                    return
                with self._lock:
                    self.requests.append(request)
                    queue = self.scripts.get(request.token)
                    action = queue.popleft() if queue else default_action(request)
                if not action(conn, request):
                    return
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


def _read_request(reader: Any) -> Recorded | None:
    line = reader.readline()
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        header = reader.readline().decode("latin-1")
        if header in ("\r\n", "\n", ""):
            break
        name, _, value = header.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int(reader.readline().split(b";")[0], 16)
            if size == 0:
                reader.readline()
                break
            body += reader.read(size)
            reader.readline()
    else:
        body = reader.read(int(headers.get("content-length", "0")))
    return Recorded(method, target, headers, body)
