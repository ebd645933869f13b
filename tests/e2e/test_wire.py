"""The wire, byte for byte, against a scripted upstream: odd JSON and SSE pass unchanged, SDK retries,
tool calls, broken streams, upstream errors, other /v1 endpoints, hop-by-hop headers."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.e2e.scripted_upstream import (
    USAGE,
    ScriptedUpstream,
    chunk,
    close_connection,
    completion,
    event,
    respond,
    sse,
)
from tests.helpers import (
    ERROR_KEYS,
    attempts,
    auth,
    chat,
    data_events,
    sdk,
    stored,
    user,
    without_created_at,
)
from tests.servers import ServerProcess, gateway_app

HI: Any = [{"role": "user", "content": "hi"}]


# --- headers against the real server -------------------------------------------------------------------


HOP_RESPONSE = {
    "connection": "x-hop-only",
    "x-hop-only": "drop me",
    "keep-alive": "timeout=5",
    "proxy-authenticate": "Basic",
    "set-cookie": "session=upstream-secret",
    "x-kept": "yes",
}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/chat/completions+conv", "/v1/models"])
def test_hop_by_hop_and_cookie_headers_do_not_cross_the_real_server(
    wire: ServerProcess, scripted: ScriptedUpstream, path: str
) -> None:
    token = "sk-hop-" + secrets.token_hex(6)
    stateful = path.endswith("+conv")
    path = path.removesuffix("+conv")
    upstream_body = completion({"role": "assistant", "content": "ok", "refusal": None})
    scripted.script(
        token, respond(200, upstream_body if "chat" in path else {"object": "list", "data": []}, HOP_RESPONSE)
    )
    headers = {
        **auth(token),
        "Connection": "keep-alive, x-private",
        "X-Private": "for this hop only",
        "Proxy-Authorization": "Basic Zm9v",
        "Cookie": "caller=secret",
        "X-Forwarded-Ok": "stays",
    }
    if stateful:
        headers["X-Conversation-Id"] = f"hop-{secrets.token_hex(4)}"
    body = {"model": "m", "messages": HI} if "chat" in path else None
    method = "POST" if body else "GET"
    response = httpx.request(method, wire.url + path, json=body, headers=headers)
    assert response.status_code == 200, response.text
    for name in ("x-hop-only", "proxy-authenticate", "set-cookie"):
        assert name not in response.headers, name
    assert response.headers.get("keep-alive") != "timeout=5"
    (received,) = scripted.received(token)
    for name in ("x-private", "proxy-authorization", "cookie"):
        assert name not in received.headers, (name, received.headers)
    assert received.headers.get("connection", "").lower() in ("", "keep-alive", "close")


def test_upstream_429_on_a_proxied_endpoint_keeps_retry_after(
    wire: ServerProcess, scripted: ScriptedUpstream
) -> None:
    token = "sk-429-" + secrets.token_hex(6)
    limited = {
        "error": {"message": "slow down", "type": "requests", "param": None, "code": "rate_limit_exceeded"}
    }
    scripted.script(token, respond(429, limited, {"retry-after": "7", "x-ratelimit-remaining-requests": "0"}))
    with (
        OpenAI(base_url=wire.url + "/v1", api_key=token, max_retries=0) as client,
        pytest.raises(openai.RateLimitError) as err,
    ):
        client.embeddings.create(model="text-embedding-3-small", input="a")
    assert err.value.response.headers["retry-after"] == "7"
    assert err.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.value.code == "rate_limit_exceeded"


ROLE = event(chunk({"role": "assistant", "content": ""}))
DONE = event("[DONE]")


@pytest.fixture(scope="module")
def wire(
    scripted: ScriptedUpstream, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A gateway in front of the scripted upstream (per backend)."""
    server = gateway_app(scripted.url, database_url).start()
    yield server
    server.stop()


# --- bytes unchanged in both directions --------------------------------------------------------------------

ODD_REQUEST = (
    b'{ "messages":[{"content":"caf\\u00e9 \xf0\x9f\x98\x80  spaced","role":"user"}] ,'
    b'"model":"m","temperature":1.0,"big":123456789012345678901234567890,"x":1e-7,"z":{"b":1,"a":2} }'
)
ODD_RESPONSE = (
    b'{"id":"chatcmpl-odd","object":"chat.completion","created":1,"model":"m",  "choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"caf\\u00e9","refusal":null},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4},"vendor_extra":{"k":[1.50,2e3]}}'
)


# --- SDK retries -------------------------------------------------------------------------------------------

SERVER_ERROR = {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}}


# --- tool calls --------------------------------------------------------------------------------------------

CALLS = [
    {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Rome"}'}},
    {"id": "call_b", "type": "function", "function": {"name": "time", "arguments": '{"tz": "CET"}'}},
]
TOOLS = [
    {"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": {}}}}
    for n in ("weather", "time")
]


def _parallel_call_events() -> list[bytes]:
    def piece(index: int, **fields: Any) -> bytes:
        return event(chunk({"tool_calls": [{"index": index, **fields}]}))

    return [
        ROLE,
        piece(0, id="call_a", type="function", function={"name": "weather", "arguments": ""}),
        piece(1, id="call_b", type="function", function={"name": "time", "arguments": ""}),
        piece(0, function={"arguments": '{"city": '}),
        piece(1, function={"arguments": '{"tz": '}),
        piece(0, function={"arguments": '"Rome"}'}),
        piece(1, function={"arguments": '"CET"}'}),
        event(chunk({}, "tool_calls")),
        event(chunk(choices=[], usage=USAGE)),
        DONE,
    ]


# --- broken streams ----------------------------------------------------------------------------------------

BROKEN = {
    "cut-after-finish": sse(
        [ROLE, event(chunk({"content": "partial"})), event(chunk({}, "stop"))], end="cut"
    ),
    "clean-end-no-done": sse([ROLE, event(chunk({"content": "partial"})), event(chunk({}, "stop"))]),
    "error-event-then-done": sse(
        [
            ROLE,
            event(chunk({"content": "par"})),
            event({"error": {"message": "overloaded", "type": "server_error"}}),
            DONE,
        ]
    ),
    "event-error": sse(
        [ROLE, b'event: error\ndata: {"error": {"message": "bad", "type": "server_error"}}\n\n']
    ),
    "finish-then-error": sse(
        [
            ROLE,
            event(chunk({"content": "a"})),
            event(chunk({}, "stop")),
            event({"error": {"message": "late failure", "type": "server_error"}}),
            DONE,
        ]
    ),
    "lone-surrogate": sse(
        [
            ROLE,
            b'data: {"choices": [{"index": 0, "delta": {"content": "\\ud800"}}]}\n\n',
            event(chunk({}, "stop")),
            DONE,
        ]
    ),
    "cut-after-usage": sse(
        [ROLE, event(chunk({}, "stop")), event(chunk(choices=[], usage=USAGE))], end="cut"
    ),
}


@pytest.mark.parametrize("with_header", [False, True], ids=["pass-through", "conversation"])
def test_bodies_are_unchanged_in_both_directions(
    wire: ServerProcess, scripted: ScriptedUpstream, api_key: str, conversation_id: str, with_header: bool
) -> None:
    headers = {"x-request-id": "req_odd", "openai-processing-ms": "42", "x-ratelimit-remaining-requests": "9"}
    scripted.script(api_key, respond(200, ODD_RESPONSE, headers))
    response = chat(wire, api_key, conversation_id if with_header else None, ODD_REQUEST)
    assert response.status_code == 200
    assert response.content == ODD_RESPONSE
    for name, value in headers.items():
        assert response.headers.get(name) == value, name
    received = scripted.received(api_key)[-1]
    if with_header:
        assert response.headers["x-conversation-id"] == conversation_id
        sent, original = received.json(), json.loads(ODD_REQUEST)
        assert {k: v for k, v in sent.items() if k != "messages"} == {
            k: v for k, v in original.items() if k != "messages"
        }
        assert sent["messages"] == original["messages"]
        assert without_created_at(stored(wire, api_key, conversation_id))[0] == original["messages"][0]
    else:
        assert received.body == ODD_REQUEST
        assert received.path == "/v1/chat/completions"


def test_pass_through_stream_is_byte_identical(
    wire: ServerProcess, scripted: ScriptedUpstream, api_key: str
) -> None:
    events = [
        ROLE,
        b": keep-alive comment\n\n",
        event(chunk({"content": "x"})),
        event(chunk({}, "stop")),
        DONE,
    ]
    scripted.script(api_key, sse(events))
    body = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"s"}]}'
    response = chat(wire, api_key, None, body)
    assert response.content == b"".join(events)
    assert scripted.received(api_key)[-1].body == body


def test_other_fields_pass_through_and_stream_options_are_merged(
    wire: ServerProcess, scripted: ScriptedUpstream, api_key: str, conversation_id: str
) -> None:
    body: dict[str, Any] = {
        "model": "vendor/model",
        "messages": [user("hi")],
        "top_k": 40,
        "repetition_penalty": 1.1,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}},
        },
        "metadata": {"a": "b"},
        "seed": 7,
        "stream": True,
        "stream_options": {"include_obfuscation": False},
    }
    response = chat(wire, api_key, conversation_id, body)
    sent = scripted.received(api_key)[-1].json()
    assert sent["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert {k: v for k, v in sent.items() if k not in ("messages", "stream_options")} == {
        k: v for k, v in body.items() if k not in ("messages", "stream_options")
    }
    chunks = [json.loads(e) for e in data_events(response.text)[:-1]]
    assert all("usage" not in c or c["usage"] is None for c in chunks)


@pytest.mark.parametrize(
    ("failure", "stream"),
    [
        (lambda: respond(500, SERVER_ERROR), False),
        (lambda: respond(503, SERVER_ERROR), True),
        (lambda: respond(429, SERVER_ERROR, {"retry-after-ms": "10"}), False),
        (lambda: respond(408, SERVER_ERROR), True),
        (close_connection, False),
    ],
    ids=["500", "503-stream", "429", "408-stream", "connection-closed"],
)
def test_sdk_retry_after_an_upstream_failure_stores_the_turn_once(
    wire: ServerProcess,
    scripted: ScriptedUpstream,
    database_url: str,
    api_key: str,
    conversation_id: str,
    failure: Callable[[], Any],
    stream: bool,
) -> None:
    client = sdk(wire, api_key, conversation_id, max_retries=2)
    client.chat.completions.create(model="m", messages=[user("one")])
    scripted.script(api_key, failure())
    result = client.chat.completions.create(model="m", messages=[user("two")], stream=stream)
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in result if c.choices)  # type: ignore[union-attr]
    else:
        text = result.choices[0].message.content  # type: ignore[union-attr]
    assert text == "[3 messages] two"
    received = scripted.received(api_key)
    assert len(received) == 3 and received[1].json() == received[2].json()
    assert [m["content"] for m in stored(wire, api_key, conversation_id)] == [
        "one",
        "[1 messages] one",
        "two",
        "[3 messages] two",
    ]
    rows = attempts(database_url, api_key)
    assert [r["status"] == 200 for r in rows] == [True, False, True]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_parallel_tool_calls_round_trip(
    wire: ServerProcess,
    scripted: ScriptedUpstream,
    api_key: str,
    conversation_id: str,
    stream: bool,
) -> None:
    if stream:
        scripted.script(api_key, sse(_parallel_call_events()))
    else:
        message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": CALLS}
        scripted.script(api_key, respond(200, completion(message)))
    client = sdk(wire, api_key, conversation_id)
    result = client.chat.completions.create(
        model="m", messages=[user("weather and time?")], tools=TOOLS, stream=stream
    )
    if stream:
        list(result)  # type: ignore[arg-type]
    results = [
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": "noon"},
    ]
    client.chat.completions.create(model="m", messages=results, tools=TOOLS)
    sent = scripted.received(api_key)[-1].json()["messages"]
    assert sent[0] == user("weather and time?")
    assert sent[1]["role"] == "assistant" and sent[1]["tool_calls"] == CALLS
    assert sent[1].get("content") in (None, "")
    assert sent[2:] == results
    messages = stored(wire, api_key, conversation_id)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "assistant"]
    assert messages[1]["tool_calls"] == CALLS


def test_stream_assembles_content_refusal_and_choice_zero_only(
    wire: ServerProcess, scripted: ScriptedUpstream, api_key: str, conversation_id: str
) -> None:
    def two(delta0: dict[str, Any], delta1: dict[str, Any]) -> list[bytes]:
        return [
            event(chunk(choices=[{"index": 1, "delta": delta1, "finish_reason": None}])),
            event(chunk(choices=[{"index": 0, "delta": delta0, "finish_reason": None}])),
        ]

    events = [
        event(chunk(choices=[{"index": i, "delta": {"role": "assistant", "content": ""}} for i in (0, 1)])),
        *two({"content": "Hel"}, {"content": "Other "}),
        *two({"content": "lo"}, {"content": "choice"}),
        event(chunk(choices=[{"index": i, "delta": {}, "finish_reason": "stop"} for i in (0, 1)])),
        DONE,
    ]
    refusal = [
        ROLE,
        event(chunk({"refusal": "I can't "})),
        event(chunk({"refusal": "help."})),
        event(chunk({}, "stop")),
        DONE,
    ]
    scripted.script(api_key, sse(events), sse(refusal))
    client = sdk(wire, api_key, conversation_id)
    list(client.chat.completions.create(model="m", messages=[user("two choices")], n=2, stream=True))
    list(client.chat.completions.create(model="m", messages=[user("refuse")], stream=True))
    messages = without_created_at(stored(wire, api_key, conversation_id))
    assert messages[1] == {"role": "assistant", "content": "Hello"}
    assert messages[3]["refusal"] == "I can't help." and messages[3].get("content") in (None, "")


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_upstream_stream_gives_an_error_event_and_adds_nothing(
    wire: ServerProcess,
    scripted: ScriptedUpstream,
    database_url: str,
    api_key: str,
    conversation_id: str,
    name: str,
) -> None:
    scripted.script(api_key, BROKEN[name])
    response = chat(wire, api_key, conversation_id, {"model": "m", "messages": [user("x")], "stream": True})
    assert "event: error" not in response.text and "event:" not in response.text
    events = data_events(response.text)
    assert events and events[-1] != "[DONE]"
    last = json.loads(events[-1])
    assert "error" in last and set(last["error"]) >= {"message", "type"}
    for payload in events[:-1]:
        parsed = json.loads(payload)
        assert all(c.get("finish_reason") is None for c in parsed.get("choices") or [])
    assert stored(wire, api_key, conversation_id) == []
    assert attempts(database_url, api_key)[-1]["error"]
    # and the SDK raises on it
    scripted.script(api_key, BROKEN[name])
    client = sdk(wire, api_key, conversation_id, max_retries=0)
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="m", messages=[user("x")], stream=True))


@pytest.mark.parametrize(
    "events",
    [
        [
            b": OPENROUTER PROCESSING\n\n",
            ROLE,
            event(chunk({"content": "a b"})),
            event(chunk({}, "stop")),
            DONE,
        ],
        [ROLE + event(chunk({"content": "a b"})) + event(chunk({}, "stop")) + DONE],
        [
            ROLE[:7],
            ROLE[7:] + event(chunk({"content": "a "}))[:20],
            event(chunk({"content": "a "}))[20:],
            event(chunk({"content": "b"})),
            event(chunk({}, "stop")),
            DONE,
        ],
        [
            e.replace(b"\n", b"\r\n")
            for e in (ROLE, event(chunk({"content": "a b"})), event(chunk({}, "stop")), DONE)
        ],
        [
            e.replace(b"data: ", b"data:")
            for e in (ROLE, event(chunk({"content": "a b"})), event(chunk({}, "stop")), DONE)
        ],
    ],
    ids=["comment", "one-chunk", "split-events", "crlf", "no-space"],
)
def test_sse_framing_variants_are_understood(
    wire: ServerProcess,
    scripted: ScriptedUpstream,
    api_key: str,
    conversation_id: str,
    events: list[bytes],
) -> None:
    scripted.script(api_key, sse(events))
    stream = sdk(wire, api_key, conversation_id).chat.completions.create(
        model="m", messages=[user("x")], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "a b"
    assert without_created_at(stored(wire, api_key, conversation_id))[1] == {
        "role": "assistant",
        "content": "a b",
    }


def test_chunks_arrive_as_they_are_produced(
    wire: ServerProcess, scripted: ScriptedUpstream, api_key: str, conversation_id: str
) -> None:
    scripted.script(
        api_key,
        sse(
            [
                ROLE,
                event(chunk({"content": "first"})),
                2.0,
                event(chunk({"content": " last"})),
                event(chunk({}, "stop")),
                DONE,
            ]
        ),
    )
    started = time.monotonic()
    first = None
    body = {"model": "m", "messages": [user("x")], "stream": True}
    with httpx.stream(
        "POST",
        f"{wire.url}/v1/chat/completions",
        json=body,
        headers=auth(api_key, conversation_id),
        timeout=30,
    ) as response:
        for line in response.iter_lines():
            if first is None and '"first"' in line:
                first = time.monotonic() - started
    total = time.monotonic() - started
    assert first is not None and first < total - 1.0  # the 2 s pause came after the first chunk reached us


# --- errors ------------------------------------------------------------------------------------------------


def test_upstream_error_passes_through_unchanged(
    wire: ServerProcess, scripted: ScriptedUpstream, database_url: str, api_key: str, conversation_id: str
) -> None:
    raw = b'{"error": {"message": "overloaded", "type": "x", "param": null, "code": "teapot"}, "extra": 1}'
    scripted.script(api_key, respond(418, raw, {"retry-after": "3", "x-request-id": "req_t"}))
    response = chat(wire, api_key, conversation_id, {"model": "m", "messages": [user("x")]})
    assert response.status_code == 418 and response.content == raw
    assert response.headers["retry-after"] == "3"
    assert stored(wire, api_key, conversation_id) == []
    row = attempts(database_url, api_key)[-1]
    assert row["status"] == 418 and row["error"]


@pytest.mark.parametrize(
    "reply",
    [
        b"<html>bad gateway</html>",
        b'{"choices": "nope"}',
        b"{}",
        b'{"choices": []}',
        b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "\\udc00"}}]}',
    ],
    ids=["html", "bad-choices", "empty-object", "no-choices", "lone-surrogate"],
)
def test_upstream_garbage_is_502_and_adds_nothing(
    wire: ServerProcess, scripted: ScriptedUpstream, api_key: str, conversation_id: str, reply: bytes
) -> None:
    scripted.script(api_key, respond(200, reply))
    response = chat(wire, api_key, conversation_id, {"model": "m", "messages": [user("x")]})
    assert response.status_code == 502, response.text
    assert set(response.json()["error"]) == ERROR_KEYS
    assert stored(wire, api_key, conversation_id) == []


def test_upstream_timeouts(
    start_gateway: Callable[..., ServerProcess],
    scripted: ScriptedUpstream,
    tmp_path: Path,
    api_key: str,
    conversation_id: str,
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'timeout.db'}"
    server = start_gateway(database_url, scripted.url, upstream_timeout="1")
    scripted.script(api_key, respond(200, completion({"role": "assistant", "content": "late"}), delay=3.0))
    response = chat(server, api_key, conversation_id, {"model": "m", "messages": [user("x")]})
    assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"
    scripted.script(api_key, sse([ROLE, event(chunk({"content": "a"})), 3.0, event(chunk({}, "stop")), DONE]))
    response = chat(server, api_key, conversation_id, {"model": "m", "messages": [user("x")], "stream": True})
    events = data_events(response.text)
    assert "error" in json.loads(events[-1]) and "[DONE]" not in events
    assert stored(server, api_key, conversation_id) == []
    assert [r["status"] for r in attempts(database_url, api_key)] == [504, 504]


# --- other /v1/* endpoints ---------------------------------------------------------------------------------


def test_other_endpoints_are_proxied_unchanged(
    wire: ServerProcess, scripted: ScriptedUpstream, database_url: str, api_key: str
) -> None:
    models = b'{"object":"list","data":[{"id":"m1","object":"model","created":1,"owned_by":"me"}]}'
    embedding = (
        b'{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-2e-3]}],"model":"e"}'
    )
    scripted.script(
        api_key, respond(200, models, {"x-extra": "1"}), respond(200, embedding), respond(404, b'{"e":1}')
    )
    response = httpx.get(f"{wire.url}/v1/models?limit=1&after=m0", headers=auth(api_key))
    assert response.content == models and response.headers["x-extra"] == "1"
    body = b'{"model":"e",  "input":["a","b"],"encoding_format":"float"}'
    response = httpx.post(f"{wire.url}/v1/embeddings", content=body, headers=auth(api_key))
    assert response.content == embedding
    response = httpx.delete(f"{wire.url}/v1/files/file-1", headers=auth(api_key))
    assert response.status_code == 404 and response.content == b'{"e":1}'
    # the stored-completions API shares the chat path: only POST /v1/chat/completions is a turn
    for target in ("/v1/chat/completions?limit=2", "/v1/chat/completions/chatcmpl-1/messages"):
        assert httpx.get(wire.url + target, headers=auth(api_key)).json()["target"] == target
    received = scripted.received(api_key)
    assert [(r.method, r.target) for r in received] == [
        ("GET", "/v1/models?limit=1&after=m0"),
        ("POST", "/v1/embeddings"),
        ("DELETE", "/v1/files/file-1"),
        ("GET", "/v1/chat/completions?limit=2"),
        ("GET", "/v1/chat/completions/chatcmpl-1/messages"),
    ]
    assert received[1].body == body
    assert len(attempts(database_url, api_key)) == 5


def test_proxied_streams_flow_both_ways(
    wire: ServerProcess, scripted: ScriptedUpstream, api_key: str
) -> None:
    scripted.script(api_key, sse([b"data: one\n\n", 2.0, b"data: two\n\n"]))

    def upload() -> Iterator[bytes]:
        yield b'{"model": "m", '
        yield b'"prompt": "streamed upload"}'

    started, first = time.monotonic(), None
    with httpx.stream(  # /v1/completions: a proxied path (/v1/responses is the gateway's own now)
        "POST", f"{wire.url}/v1/completions", content=upload(), headers=auth(api_key), timeout=30
    ) as response:
        for line in response.iter_lines():
            if first is None and line == "data: one":
                first = time.monotonic() - started
    assert first is not None and first < time.monotonic() - started - 1.0
    assert scripted.received(api_key)[-1].body == b'{"model": "m", "prompt": "streamed upload"}'


# --- configuration that needs its own gateway --------------------------------------------------------------


def test_upstream_url_paths(
    start_gateway: Callable[..., ServerProcess], scripted: ScriptedUpstream, tmp_path: Path, api_key: str
) -> None:
    base = scripted.url
    # no path at all means /v1; a path is kept as given (a trailing slash does not double)
    cases = {base: "/v1", base + "/": "/v1", base + "/custom/v1/": "/custom/v1"}
    for index, (url, prefix) in enumerate(cases.items()):
        server = start_gateway(f"sqlite+aiosqlite:///{tmp_path / f'u{index}.db'}", url)
        key = f"{api_key}-{index}"
        chat(server, key, "c1", {"model": "m", "messages": [user("x")]})
        chat(server, key, None, {"model": "m", "messages": [user("x")]})
        httpx.get(f"{server.url}/v1/models", headers=auth(key))
        assert [r.target for r in scripted.received(key)] == [
            f"{prefix}/chat/completions",
            f"{prefix}/chat/completions",
            f"{prefix}/models",
        ], url
        server.stop()


def test_upstream_api_key_replaces_the_callers_token_upstream(
    start_gateway: Callable[..., ServerProcess],
    scripted: ScriptedUpstream,
    tmp_path: Path,
    api_key: str,
    conversation_id: str,
) -> None:
    upstream_key = "sk-upstream-" + secrets.token_hex(8)
    admin_key = "admin-" + secrets.token_hex(8)
    server = start_gateway(
        f"sqlite+aiosqlite:///{tmp_path / 'key.db'}",
        scripted.url,
        upstream_api_key=upstream_key,
        admin_key=admin_key,
    )
    created = httpx.post(f"{server.url}/admin/keys", json={"name": "caller"}, headers=auth(admin_key))
    assert created.status_code == 200, created.text
    api_key = created.json()["secret"]  # with a gateway-held key, callers present gateway keys (issue 5)
    response = chat(server, api_key, conversation_id, {"model": "m", "messages": [user("x")]})
    assert response.status_code == 200, response.text
    received = scripted.received(upstream_key)
    assert len(received) == 1 and scripted.received(api_key) == []
    assert received[0].headers["authorization"] == f"Bearer {upstream_key}"
    assert api_key not in json.dumps(received[0].headers)


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("stream", [False, True])
def test_a_token_the_upstream_refuses_creates_nothing_not_even_usage(
    wire: ServerProcess, scripted: ScriptedUpstream, status: int, stream: bool
) -> None:
    token = "sk-refused-" + secrets.token_hex(6)
    refusal = {
        "error": {"message": "no", "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
    }
    scripted.script(token, respond(status, refusal))
    conversation = f"refused-{secrets.token_hex(4)}"
    response = httpx.post(
        wire.url + "/v1/chat/completions",
        json={"model": "m", "messages": HI, "stream": stream},
        headers={**auth(token), "X-Conversation-Id": conversation},
    )
    assert response.status_code == status and response.json() == refusal
    got = httpx.get(f"{wire.url}/v1/conversations/{conversation}", headers=auth(token))
    assert got.status_code == 404
    assert httpx.get(f"{wire.url}/v1/conversations", headers=auth(token)).json()["data"] == []
    assert httpx.get(f"{wire.url}/v1/usage", headers=auth(token)).json()["requests"] == 0
