"""Every call made with a gateway key counts against its budget, once: streamed, abandoned, refused as
stale, concurrent, proxied.

In process: the app on ASGITransport in front of a scripted upstream (httpx transport) or the mock upstream.
Abandoned streams are driven through the ASGI interface directly, so that the client really leaves mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.app import create_app
from gateway.config import Settings
from gateway.mock_upstream.app import create_mock_app
from gateway.store.tables import ATTEMPTS, BUDGET_RESERVATIONS, CONVERSATIONS, Attempt

ADMIN = "admin-key-budget-tests"
MODEL = "test-model"
PRICES = {MODEL: {"input": 1, "output": 1}, "gpt-4o-mini": {"input": 1, "output": 1}}  # 1e-6 USD a token

Script = Callable[[httpx.Request], httpx.Response]


class Scripted(httpx.AsyncBaseTransport):
    """An upstream that answers with `script` and remembers what it was sent."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Record the request (body read), then answer."""
        await request.aread()
        self.requests.append(request)
        return self.script(request)


class Gateway:
    """The app in process, with its database, in gateway-key mode."""

    def __init__(self, app: Any, client: httpx.AsyncClient, database_url: str) -> None:
        self.app = app
        self.client = client
        self.database_url = database_url

    async def key(self, budget_usd: str) -> str:
        """A new key with this budget; its secret."""
        body = {"name": f"k{len(await self.attempts())}-{budget_usd}", "budget_usd": float(budget_usd)}
        response = await self.client.post(
            "/admin/keys", json=body, headers={"authorization": f"Bearer {ADMIN}"}
        )
        assert response.status_code == 200, response.text
        secret: str = response.json()["secret"]
        return secret

    async def attempts(self) -> list[Attempt]:
        """Every request-log row, oldest first."""
        engine = create_async_engine(self.database_url)
        try:
            async with engine.connect() as connection:
                result = await connection.execute(select(ATTEMPTS).order_by(ATTEMPTS.c.pk))
                return list(result.all())  # type: ignore[arg-type]
        finally:
            await engine.dispose()

    async def reservations(self) -> int:
        """How many budget reservations are live."""
        engine = create_async_engine(self.database_url)
        try:
            async with engine.connect() as connection:
                return len((await connection.execute(select(BUDGET_RESERVATIONS.c.pk))).all())
        finally:
            await engine.dispose()


async def start(
    tmp_path: Path, upstream: httpx.AsyncBaseTransport, database_url: str | None = None, **overrides: Any
) -> AsyncIterator[Gateway]:
    """The gateway holding the upstream key, with prices for the test models."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES))
    database_url = database_url or f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    settings = Settings(
        database_url=database_url,
        upstream_url="http://upstream.test/v1",
        upstream_api_key="sk-upstream",
        admin_key=ADMIN,
        prices_file=str(prices),
        key_cache_seconds=0,
        **overrides,
    )
    app = create_app(settings, transport=upstream)
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield Gateway(manager.app, client, database_url)


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    """One chat.completion.chunk event."""
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def sse(events: list[bytes]) -> httpx.Response:
    """A streamed answer of these events."""

    async def body() -> AsyncIterator[bytes]:
        for event in events:
            yield event

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


def without_usage(_: httpx.Request) -> httpx.Response:
    """A chat stream that never reports usage, whatever it was asked."""
    return sse(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "one two three four"}),
            chunk({}, "stop"),
            b"data: [DONE]\n\n",
        ]
    )


def bearer(secret: str, **extra: str) -> dict[str, str]:
    """Request headers with the key."""
    return {"authorization": f"Bearer {secret}", **extra}


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "count to four"}], "stream": True}


@pytest.fixture
async def mocked(tmp_path: Path) -> AsyncIterator[Gateway]:
    """The gateway in front of the mock upstream (which reports usage when asked, like OpenAI)."""
    async for gateway in start(tmp_path, httpx.ASGITransport(app=create_mock_app())):
        yield gateway


async def test_a_stateless_stream_without_include_usage_is_charged_and_the_budget_holds(
    mocked: Gateway,
) -> None:
    secret = await mocked.key("0.000001")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "stream": True}
    first = await mocked.client.post("/v1/chat/completions", json=body, headers=bearer(secret))
    assert first.status_code == 200
    events = [line for line in first.text.split("\n\n") if line.startswith("data: {")]
    assert not any(json.loads(e[6:]).get("choices") == [] for e in events)  # the usage chunk stays hidden
    rows = await mocked.attempts()
    assert rows[-1].prompt_tokens and rows[-1].cost_pusd and not rows[-1].estimated
    refused = await mocked.client.post("/v1/chat/completions", json=body, headers=bearer(secret))
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    assert await mocked.reservations() == 0


async def test_a_stream_the_client_asked_usage_of_keeps_its_usage_chunk(mocked: Gateway) -> None:
    secret = await mocked.key("10")
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = await mocked.client.post("/v1/chat/completions", json=body, headers=bearer(secret))
    events = [json.loads(e[6:]) for e in response.text.split("\n\n") if e.startswith("data: {")]
    assert events[-1]["choices"] == [] and events[-1]["usage"]["prompt_tokens"] > 0


@pytest.mark.parametrize("stateful", [False, True])
async def test_a_stream_without_usage_is_charged_an_estimate(tmp_path: Path, stateful: bool) -> None:
    upstream = Scripted(without_usage)
    async for gateway in start(tmp_path, upstream):
        secret = await gateway.key("10")
        headers = bearer(secret, **({"x-conversation-id": "est"} if stateful else {}))
        response = await gateway.client.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
        sent = json.loads(upstream.requests[-1].content)
        assert sent["stream_options"] == {"include_usage": True}  # asked for, though never answered
        row = (await gateway.attempts())[-1]
        assert row.estimated and row.status == 200
        assert row.prompt_tokens is not None and row.prompt_tokens > 0
        assert (
            row.completion_tokens == 5
        )  # "one two three four": 18 characters, 1 token per 4 (unknown model)
        assert row.cost_pusd == (row.prompt_tokens + row.completion_tokens) * 10**6
        usage = (await gateway.client.get("/v1/usage", headers=bearer(secret))).json()
        assert usage["estimated_requests"] == 1 and usage["prompt_tokens"] == row.prompt_tokens
        csv_report = await gateway.client.get("/v1/usage?format=csv", headers=bearer(secret))
        assert csv_report.headers["content-type"].startswith("text/csv")
        header, values = csv_report.text.splitlines()[:2]
        assert dict(zip(header.split(","), values.split(","), strict=True))["estimated_requests"] == "1"


async def abandon(app: Any, path: str, body: dict[str, Any], headers: dict[str, str]) -> list[bytes]:
    """Send a request through ASGI and leave as soon as the first body bytes arrive; the bytes received."""
    gone = asyncio.Event()
    received: list[bytes] = []
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            received.append(message["body"])
            gone.set()

    await asyncio.wait_for(app(post_scope(path, headers), receive, send), 30)
    return received


def post_scope(path: str, headers: dict[str, str]) -> dict[str, Any]:
    """The ASGI scope of a JSON POST to `path` with `headers`, driven straight through the app."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (k.encode(), v.encode()) for k, v in {**headers, "content-type": "application/json"}.items()
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("gw", 80),
    }


def stalling(first: list[bytes]) -> Script:
    """A stream that sends `first` and then nothing more (until the gateway closes it)."""

    def script(_: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            for event in first:
                yield event
            await asyncio.Event().wait()
            yield b""  # pragma: no cover

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    return script


@pytest.mark.parametrize("stateful", [False, True])
async def test_an_abandoned_chat_stream_is_charged_an_estimate(tmp_path: Path, stateful: bool) -> None:
    events = [chunk({"role": "assistant", "content": ""}), chunk({"content": "partial answer text"})]
    async for gateway in start(tmp_path, Scripted(stalling(events))):
        secret = await gateway.key("10")
        headers = bearer(secret, **({"x-conversation-id": "left"} if stateful else {}))
        received = await abandon(gateway.app, "/v1/chat/completions", CHAT, headers)
        assert b"partial answer" in b"".join(received)
        row = (await gateway.attempts())[-1]
        assert row.status == 499 and row.estimated
        assert row.prompt_tokens and row.completion_tokens == 5  # "partial answer text": 19 characters
        assert row.cost_pusd == (row.prompt_tokens + row.completion_tokens) * 10**6
        assert await gateway.reservations() == 0


async def test_an_abandoned_pass_through_responses_stream_is_charged_an_estimate(tmp_path: Path) -> None:
    events = [
        b'event: response.created\ndata: {"type":"response.created","response":{"model":"test-model"}}\n\n',
        b"event: response.output_text.delta\n"
        b'data: {"type":"response.output_text.delta","delta":"abcdefgh"}\n\n',
    ]
    async for gateway in start(tmp_path, Scripted(stalling(events)), responses_mode="passthrough"):
        secret = await gateway.key("10")
        body = {"model": MODEL, "input": "write a long story", "stream": True}
        await abandon(gateway.app, "/v1/responses", body, bearer(secret))
        row = (await gateway.attempts())[-1]
        assert row.endpoint == "/v1/responses" and row.status == 499 and row.estimated
        assert row.prompt_tokens == 5 and row.completion_tokens == 2  # 18 and 8 characters, 1 token per 4
        assert row.cost_pusd == 7 * 10**6


def responses_stream(_: httpx.Request) -> httpx.Response:
    """A whole Responses API stream that reports its usage in response.completed."""
    done = {
        "type": "response.completed",
        "response": {"model": MODEL, "usage": {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}},
    }
    return sse(
        [
            b'data: {"type":"response.output_text.delta","delta":"hi"}\n\n',
            b"event: response.completed\ndata: " + json.dumps(done).encode() + b"\n\n",
        ]
    )


async def test_a_pass_through_responses_stream_is_charged_its_reported_usage(tmp_path: Path) -> None:
    async for gateway in start(tmp_path, Scripted(responses_stream), responses_mode="passthrough"):
        secret = await gateway.key("10")
        body = {"model": MODEL, "input": "hi", "stream": True}
        response = await gateway.client.post("/v1/responses", json=body, headers=bearer(secret))
        assert response.status_code == 200 and b"response.completed" in response.content
        row = (await gateway.attempts())[-1]
        assert (row.prompt_tokens, row.completion_tokens, row.estimated) == (11, 7, False)
        assert row.cost_pusd == 18 * 10**6


def completions_stream(request: httpx.Request) -> httpx.Response:
    """A legacy completions stream, with the usage chunk only when asked for."""
    asked = json.loads(request.content).get("stream_options", {}).get("include_usage") is True
    base = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": MODEL}
    events = [
        b"data: "
        + json.dumps(base | {"choices": [{"index": 0, "text": "abcd", "finish_reason": None}]}).encode()
    ]
    if asked:
        usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        events.append(b"data: " + json.dumps(base | {"choices": [], "usage": usage}).encode())
    return sse([e + b"\n\n" for e in events] + [b"data: [DONE]\n\n"])


async def test_a_completions_stream_asks_for_usage_and_hides_it(tmp_path: Path) -> None:
    upstream = Scripted(completions_stream)
    async for gateway in start(tmp_path, upstream):
        secret = await gateway.key("10")
        body = {"model": MODEL, "prompt": "abc", "stream": True}
        response = await gateway.client.post("/v1/completions", json=body, headers=bearer(secret))
        assert response.status_code == 200
        assert b'"usage"' not in response.content and response.content.endswith(b"data: [DONE]\n\n")
        assert json.loads(upstream.requests[-1].content)["stream_options"] == {"include_usage": True}
        row = (await gateway.attempts())[-1]
        assert (row.prompt_tokens, row.completion_tokens, row.estimated) == (3, 1, False)


def slow_with_usage(request: httpx.Request) -> httpx.Response:
    """A plain chat completion, answered a little later, reporting 10 prompt and 5 completion tokens."""

    async def body() -> AsyncIterator[bytes]:
        await asyncio.sleep(0.05)
        yield json.dumps(
            {
                "id": "chatcmpl-2",
                "object": "chat.completion",
                "created": 1,
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "hello"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        ).encode()

    return httpx.Response(200, headers={"content-type": "application/json"}, content=body())


async def test_concurrent_calls_overspend_a_budget_by_at_most_one_call(
    tmp_path: Path, database_url: str
) -> None:
    """40 concurrent calls; on Postgres spread over two replicas (two apps, one database)."""
    replicas = 2 if database_url.startswith("postgresql") else 1
    async with contextlib.AsyncExitStack() as stack:
        gateways = [
            await stack.enter_async_context(
                contextlib.asynccontextmanager(start)(tmp_path, Scripted(slow_with_usage), database_url)
            )
            for _ in range(replicas)
        ]
        secret = await gateways[0].key("0.0001")  # 100 tokens at 1e-6 USD each
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
        calls = [
            gateways[i % replicas].client.post("/v1/chat/completions", json=body, headers=bearer(secret))
            for i in range(40)
        ]
        statuses = [r.status_code for r in await asyncio.gather(*calls)]
        assert set(statuses) == {200, 429}
        owner = hashlib.sha256(secret.encode()).hexdigest()
        rows = [r for r in await gateways[0].attempts() if r.owner == owner]
        spent = sum(r.cost_pusd or 0 for r in rows)
        one_call = (8 + 20) * 10**6  # a reservation: the prompt counted offline plus max_tokens
        assert spent <= 100 * 10**6 + one_call, (statuses.count(200), spent)
        assert await gateways[0].reservations() == 0


@pytest.mark.parametrize("stream", [False, True])
async def test_translated_responses_calls_spend_the_key_budget(mocked: Gateway, stream: bool) -> None:
    secret = await mocked.key("0.000001")
    body = {"model": "gpt-4o-mini", "input": "hello", "stream": stream, "store": False}
    first = await mocked.client.post("/v1/responses", json=body, headers=bearer(secret))
    assert first.status_code == 200, first.text
    row = (await mocked.attempts())[-1]
    assert row.prompt_tokens and row.cost_pusd
    refused = await mocked.client.post("/v1/responses", json=body, headers=bearer(secret))
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    assert await mocked.reservations() == 0


def with_usage(_: httpx.Request) -> httpx.Response:
    """A whole chat stream reporting 10 prompt and 5 completion tokens."""
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    usage_only = {"object": "chat.completion.chunk", "choices": [], "usage": usage}
    return sse(
        [
            chunk({"role": "assistant", "content": "hello"}),
            chunk({}, "stop"),
            b"data: " + json.dumps(usage_only).encode() + b"\n\n",
            b"data: [DONE]\n\n",
        ]
    )


class MovingOn(httpx.AsyncBaseTransport):
    """Answers `with_usage`, but while the call runs another writer moves the conversation on (if it exists):
    the turn that made the call is stale when it comes to store."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Change the conversation under the turn, then answer."""
        await request.aread()
        engine = create_async_engine(self.database_url)
        try:
            async with engine.begin() as connection:
                moved = CONVERSATIONS.c.message_count + 1
                await connection.execute(update(CONVERSATIONS).values(message_count=moved))
        finally:
            await engine.dispose()
        return with_usage(request)


async def test_a_stream_refused_as_stale_when_stored_is_logged_and_charged_once(
    tmp_path: Path, database_url: str
) -> None:
    async for gateway in start(tmp_path, MovingOn(database_url), database_url):
        secret = await gateway.key("10")
        headers = bearer(secret, **{"x-conversation-id": "moved"})
        first = await gateway.client.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert first.status_code == 200 and first.text.endswith("data: [DONE]\n\n")  # nothing to move yet
        stale = await gateway.client.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert stale.status_code == 200 and b"conversation_busy" in stale.content  # fenced at store time
        assert not stale.text.endswith("data: [DONE]\n\n")
        rows = [row for row in await gateway.attempts() if row.conversation_id == "moved"]
        assert [row.status for row in rows] == [200, 409]
        assert rows[-1].cost_pusd == 15 * 10**6  # the reported usage, charged once
        assert await gateway.reservations() == 0


class Stalling(httpx.AsyncByteStream):
    """An upstream body that sends `first`, then waits until the gateway closes it."""

    def __init__(self, first: list[bytes]) -> None:
        self.first = first
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self.first:
            yield event
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        """Remember that the gateway closed the upstream response."""
        self.closed = True


class StallsFirst(httpx.AsyncBaseTransport):
    """The first call's stream stalls (see `Stalling`); later calls get whole answers."""

    def __init__(self) -> None:
        self.stalled = Stalling([chunk({"role": "assistant", "content": ""})])
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer the call."""
        await request.aread()
        self.calls += 1
        if self.calls > 1:
            return with_usage(request)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=self.stalled)


async def leave_before_the_body(
    app: Any, path: str, body: dict[str, Any], headers: dict[str, str], how: str
) -> None:
    """Send a request through ASGI; the client is gone before the response body is first iterated:
    `disconnect` reports it while the status line waits to be sent (a full socket), `send_fails` fails
    the sending of the status line."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
        if how == "send_fails":
            await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            if how == "send_fails":
                raise OSError("the client went away")
            await asyncio.Event().wait()  # until the gateway stops sending

    await asyncio.wait_for(app(post_scope(path, headers), receive, send), 30)


@pytest.mark.parametrize("how", ["disconnect", "send_fails"])
@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/chat/completions", CHAT), ("/v1/responses", {"model": MODEL, "input": "hi", "stream": True})],
)
async def test_a_stream_the_client_left_before_its_body_started_releases_the_conversation(
    tmp_path: Path, how: str, path: str, body: dict[str, Any]
) -> None:
    upstream = StallsFirst()
    async for gateway in start(tmp_path, upstream, lock_timeout=1.0):
        secret = await gateway.key("10")
        headers = bearer(secret, **{"x-conversation-id": "gone"})
        await leave_before_the_body(gateway.app, path, body, headers, how)
        assert upstream.stalled.closed
        rows = [row for row in await gateway.attempts() if row.conversation_id == "gone"]
        assert [row.status for row in rows] == [499]  # logged once, as the client leaving
        assert rows[0].estimated and rows[0].cost_pusd
        assert await gateway.reservations() == 0
        # the conversation is free at once: the next turn is answered, not refused after the lock wait
        again = await gateway.client.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert again.status_code == 200 and again.text.endswith("data: [DONE]\n\n")


class StallsEveryCall(httpx.AsyncBaseTransport):
    """Every call's stream stalls after `first` (see `Stalling`)."""

    def __init__(self, first: list[bytes]) -> None:
        self.first = first
        self.streams: list[Stalling] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer with a stalling stream."""
        await request.aread()
        self.streams.append(Stalling(self.first))
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=self.streams[-1])


@pytest.mark.parametrize("how", ["disconnect", "send_fails"])
@pytest.mark.parametrize(
    ("path", "body", "first"),
    [
        ("/v1/completions", {"model": MODEL, "prompt": "abc", "stream": True}, b'data: {"choices":[]}\n\n'),
        (
            "/v1/responses",
            {"model": MODEL, "input": "hi", "stream": True},
            b'data: {"type":"response.created","response":{"model":"test-model"}}\n\n',
        ),
    ],
    ids=["completions", "responses-passthrough"],
)
async def test_a_proxied_stream_the_client_left_before_its_body_started_is_closed_and_logged(
    tmp_path: Path, how: str, path: str, body: dict[str, Any], first: bytes
) -> None:
    upstream = StallsEveryCall([first])
    async for gateway in start(tmp_path, upstream, responses_mode="passthrough"):
        secret = await gateway.key("10")
        await leave_before_the_body(gateway.app, path, body, bearer(secret), how)
        assert [stream.closed for stream in upstream.streams] == [True]
        rows = [row for row in await gateway.attempts() if row.endpoint == path]
        assert [row.status for row in rows] == [499]  # logged once, as the client leaving
        assert rows[0].estimated and rows[0].cost_pusd
        assert await gateway.reservations() == 0
