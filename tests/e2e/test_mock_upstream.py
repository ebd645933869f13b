"""End-to-end tests of the mock upstream served by uvicorn, driven by the openai SDK and httpx."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import uvicorn

from gateway.mock_upstream import create_mock_app, mock_usage

AUTH = {"Authorization": "Bearer sk-test"}
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}


@pytest.fixture(scope="module")
def mock_url() -> Iterator[str]:
    """Serve a fresh mock app with uvicorn on a free 127.0.0.1 port in a background thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_mock_app(), log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "mock upstream did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    if thread.is_alive():
        server.force_exit = True
        thread.join(5)
    sock.close()


@pytest.fixture
def client(mock_url: str) -> Iterator[openai.OpenAI]:
    """An openai SDK client pointed at the mock, without retries."""
    with openai.OpenAI(api_key="sk-test", base_url=f"{mock_url}/v1", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def http(mock_url: str) -> Iterator[httpx.Client]:
    """A plain httpx client pointed at the mock, authenticated."""
    with httpx.Client(base_url=mock_url, headers=AUTH, timeout=10) as raw:
        yield raw


def _user(text: str) -> list[Any]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


def _chat(http: httpx.Client, text: str, **extra: Any) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": _user(text), **extra})


def _sse_payloads(body: str) -> list[str]:
    return [line[len("data: ") :] for line in body.split("\n\n") if line.startswith("data: ")]


def test_sync_completion(client: openai.OpenAI) -> None:
    """A plain completion echoes the message count and the last user text, with a dated model."""
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_user("hello there"))
    completion = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_")
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o-mini-2024-07-18"
    assert completion.system_fingerprint == "fp_mock"
    choice = completion.choices[0]
    assert choice.message.content == "[2 messages] hello there"
    assert choice.message.refusal is None
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    expected = mock_usage(_user("hello there"), "[2 messages] hello there", "gpt-4o-mini")
    assert completion.usage.model_dump(exclude_none=True) == expected


def test_undated_model_is_echoed(client: openai.OpenAI) -> None:
    """Models without a dated alias come back unchanged."""
    completion = client.chat.completions.create(model="o3-mini", messages=_user("hi"))
    assert completion.model == "o3-mini"
    assert completion.usage is not None and completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 8


def test_stream_with_usage(client: openai.OpenAI) -> None:
    """A stream sends a role chunk, several content pieces, a finish chunk and a usage chunk."""
    text = "the quick brown fox jumps"
    stream = client.chat.completions.create(
        model="gpt-4o", messages=_user(text), stream=True, stream_options={"include_usage": True}
    )
    with stream:
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.id for c in chunks} == {chunks[0].id}
    assert all(c.model == "gpt-4o-2024-08-06" for c in chunks)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 3
    assert "".join(pieces) == f"[2 messages] {text}"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_wire_format(http: httpx.Client) -> None:
    """Without include_usage there is no usage key and the stream ends with [DONE]."""
    response = _chat(http, "one two three", stream=True)
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = _sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all("usage" not in c and c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}


def test_tool_call_and_round_trip(client: openai.OpenAI) -> None:
    """With tools the mock calls the first tool; answering it yields a tool-result text reply."""
    messages: list[Any] = _user("weather in Paris")
    completion = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    call: Any = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and len(call.id) == 17
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"input": "weather in Paris"}
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny"})
    again = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])
    assert again.choices[0].message.content == "[4 messages] tool result: sunny"
    assert again.choices[0].finish_reason == "stop"


def test_tool_call_stream(client: openai.OpenAI) -> None:
    """A streamed tool call arrives as a header delta and several argument fragments."""
    stream = client.chat.completions.create(
        model="gpt-4o", messages=_user("look it up"), tools=[WEATHER_TOOL], stream=True
    )
    with stream:
        chunks = list(stream)
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert len(deltas) >= 3
    assert deltas[0][0].id is not None and deltas[0][0].function is not None
    assert deltas[0][0].function.name == "get_weather"
    arguments = "".join(d[0].function.arguments or "" for d in deltas if d[0].function is not None)
    assert json.loads(arguments) == {"input": "look it up"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_choice_none_gives_text(client: openai.OpenAI) -> None:
    """tool_choice "none" suppresses the tool call."""
    completion = client.chat.completions.create(
        model="gpt-4o", messages=_user("hi"), tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert completion.choices[0].message.content == "[2 messages] hi"


@pytest.mark.parametrize(
    ("messages", "extra", "param", "fragment"),
    [
        ([{"role": "user", "content": "x"}, {"role": "tool", "content": "r", "tool_call_id": "c1"}], {},
         "messages[1].role", "must be a response to a preceeding message with 'tool_calls'"),
        ([{"role": "user", "content": "x"},
          {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                "function": {"name": "f", "arguments": "{}"}}]},
          {"role": "user", "content": "y"}], {},
         "messages[1].role", "did not have response messages: c1"),
        ([{"role": "user", "content": "x"},
          {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                "function": {"name": "f", "arguments": "{}"}}]},
          {"role": "tool", "content": "r"}], {}, "messages[2].tool_call_id", "Missing required parameter"),
        ([{"role": "wizard", "content": "x"}], {}, "messages[0].role", "Invalid value: 'wizard'"),
        ([{"role": "user"}], {}, "messages[0].content", "Missing required parameter"),
        ([], {}, "messages", "empty array"),
        ([{"role": "user", "content": "x"}], {"stream_options": {"include_usage": True}}, "stream_options",
         "only allowed when 'stream' is enabled"),
    ],
)  # fmt: skip
def test_validation_errors(
    client: openai.OpenAI, messages: list[Any], extra: dict[str, Any], param: str, fragment: str
) -> None:
    """Invalid requests raise BadRequestError with OpenAI's param and message."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=messages, **extra)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment in error["message"]


def test_invalid_json_and_stream_type(http: httpx.Client) -> None:
    """Unparsable bodies and a non-bool stream are 400s."""
    response = http.post(
        "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    response = _chat(http, "x", stream="yes")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "stream"


def test_auth(mock_url: str, http: httpx.Client) -> None:
    """A missing key and an `sk-bad` key are 401s in OpenAI's shape."""
    body = {"model": "gpt-4o", "messages": _user("x")}
    with httpx.Client(base_url=mock_url) as anonymous:
        assert anonymous.post("/v1/chat/completions", json=body).status_code == 401
        assert anonymous.get("/v1/models").status_code == 401
    with (
        openai.OpenAI(api_key="sk-bad-123", base_url=f"{mock_url}/v1", max_retries=0) as bad,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        bad.chat.completions.create(model="gpt-4o", messages=_user("x"))
    assert caught.value.code == "invalid_api_key"
    assert caught.value.body == {
        "message": caught.value.body["message"],  # type: ignore[index]
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }


def test_models(client: openai.OpenAI) -> None:
    """The model list, one model, and an unknown model's 404."""
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
    assert client.models.retrieve("gpt-4o").owned_by == "mock"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-9")
    assert caught.value.code == "model_not_found"


def test_embeddings(client: openai.OpenAI, http: httpx.Client) -> None:
    """Embeddings are deterministic 8-dim vectors, the same in base64 (SDK default) and float."""
    result = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert [len(d.embedding) for d in result.data] == [8, 8]
    assert result.usage.prompt_tokens == 2
    floats = http.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "a"}).json()
    assert floats["data"][0]["embedding"] == pytest.approx(result.data[0].embedding, abs=1e-6)
    assert result.data[0].embedding != result.data[1].embedding


def test_unknown_path(http: httpx.Client) -> None:
    """Unknown paths are OpenAI-shaped 404s that still carry a request id."""
    response = http.post("/v1/nothing", json={})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (POST /v1/nothing)"
    assert response.headers["x-request-id"].startswith("req_")


def test_request_log_and_retries(mock_url: str, http: httpx.Client) -> None:
    """Accepted requests are logged with their headers; SDK retries show up with their retry count."""
    assert http.delete("/mock/requests").status_code == 200
    _chat(http, "x", stream="bad")  # rejected by validation: not logged
    with (
        openai.OpenAI(api_key="sk-test", base_url=f"{mock_url}/v1", max_retries=1) as sdk,
        pytest.raises(openai.InternalServerError),
    ):
        sdk.with_options(timeout=10).chat.completions.create(model="gpt-4o", messages=_user("FAULT:500"))
    log = http.get("/mock/requests").json()["data"]
    assert [entry["headers"]["x-stainless-retry-count"] for entry in log] == ["0", "1"]
    assert log[0]["headers"]["authorization"] == "Bearer sk-test"
    assert log[0]["body"]["messages"][-1]["content"] == "FAULT:500"
    http.delete("/mock/requests")
    assert http.get("/mock/requests").json() == {"data": []}


@pytest.mark.parametrize("status", [500, 503, 400])
def test_status_faults(http: httpx.Client, status: int) -> None:
    """FAULT:<status> answers that status with an OpenAI error body."""
    response = _chat(http, f"please FAULT:{status}")
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_rate_limit_fault(http: httpx.Client) -> None:
    """FAULT:429 is a rate limit error with retry-after: 7."""
    response = _chat(http, "FAULT:429")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert response.json()["error"]["type"] == "requests"


def test_fault_only_from_last_user_message(http: httpx.Client) -> None:
    """A marker in an earlier message does nothing."""
    messages = [{"role": "user", "content": "FAULT:500"}, {"role": "assistant", "content": "ok"}]
    messages.append({"role": "user", "content": "fine"})
    response = http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": messages})
    assert response.status_code == 200


def test_garbage_fault(http: httpx.Client) -> None:
    """FAULT:garbage returns a non-JSON body, and a stream with an unparsable event."""
    response = _chat(http, "FAULT:garbage")
    assert response.status_code == 200
    assert response.content == b"this is not json{"
    payloads = _sse_payloads(_chat(http, "FAULT:garbage", stream=True).text)
    assert json.loads(payloads[0])["choices"][0]["delta"]["role"] == "assistant"
    assert payloads[1:] == ["{not json", "[DONE]"]


def test_cut_fault_stream(http: httpx.Client) -> None:
    """FAULT:cut ends the stream cleanly after two content chunks, without finish or [DONE]."""
    response = _chat(http, "FAULT:cut now", stream=True)
    assert response.status_code == 200
    chunks = [json.loads(p) for p in _sse_payloads(response.text)]
    assert len(chunks) == 3
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


@pytest.mark.parametrize(
    ("text", "stream"), [("FAULT:reset", True), ("FAULT:reset", False), ("FAULT:cut", False)]
)
def test_reset_fault(http: httpx.Client, text: str, stream: bool) -> None:
    """FAULT:reset (and a non-stream cut) break the connection mid-body."""
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        _chat(http, text, stream=stream)


def test_huge_fault(http: httpx.Client) -> None:
    """FAULT:huge:<n> returns n bytes of content; streamed in 64 KiB pieces."""
    response = _chat(http, "FAULT:huge:200000")
    assert response.json()["choices"][0]["message"]["content"] == "x" * 200_000
    chunks = [json.loads(p) for p in _sse_payloads(_chat(http, "FAULT:huge:200000", stream=True).text)[:-1]]
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    assert [len(p) for p in pieces] == [65536, 65536, 65536, 3392]


def test_nousage_fault(http: httpx.Client) -> None:
    """FAULT:nousage omits usage everywhere."""
    assert "usage" not in _chat(http, "FAULT:nousage").json()
    body = _chat(http, "FAULT:nousage", stream=True, stream_options={"include_usage": True}).text
    payloads = _sse_payloads(body)
    assert payloads[-1] == "[DONE]"
    assert all("usage" not in json.loads(p) for p in payloads[:-1])


def test_slow_fault(http: httpx.Client) -> None:
    """FAULT:slow:<ms> delays the answer."""
    started = time.monotonic()
    assert _chat(http, "FAULT:slow:300").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_stall_faults(http: httpx.Client) -> None:
    """FAULT:stall never answers; FAULT:stall-stream stops after the first content chunk."""
    body: dict[str, Any] = {"model": "gpt-4o", "messages": _user("FAULT:stall")}
    with pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json=body, timeout=0.5)
    body = {"model": "gpt-4o", "messages": _user("FAULT:stall-stream"), "stream": True}
    received = b""
    with (
        pytest.raises(httpx.ReadTimeout),
        http.stream("POST", "/v1/chat/completions", json=body, timeout=0.5) as response,
    ):
        for piece in response.iter_bytes():
            received += piece
    assert len(_sse_payloads(received.decode())) == 2


async def test_async_stream(mock_url: str) -> None:
    """The async SDK client streams too."""
    async with openai.AsyncOpenAI(api_key="sk-test", base_url=f"{mock_url}/v1", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(model="gpt-4o", messages=_user("async hi"), stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "[2 messages] async hi"
