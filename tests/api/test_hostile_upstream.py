"""A hostile upstream: malformed stream chunks, usage numbers out of range, content that is not text.

In process: the app on ASGITransport in front of a scripted upstream; both modes, stateless and stateful.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.app import create_app
from gateway.config import Settings
from gateway.store.tables import ATTEMPTS, MESSAGES

MODEL = "gpt-4o-mini"


async def rows(database_url: str) -> tuple[list[Any], int]:
    """Every request-log row and the number of stored messages."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            attempts = list((await connection.execute(select(ATTEMPTS).order_by(ATTEMPTS.c.pk))).all())
            messages = (await connection.execute(select(func.count()).select_from(MESSAGES))).scalar_one()
            return attempts, int(messages)
    finally:
        await engine.dispose()


class Upstream:
    """The gateway in process in front of an upstream that answers every call with `answer()`."""

    def __init__(self, client: httpx.AsyncClient, database_url: str) -> None:
        self.client = client
        self.database_url = database_url

    async def chat(self, body: dict[str, Any], conversation: str | None = None) -> httpx.Response:
        """A chat call as a caller of the pass-through mode."""
        headers = {"authorization": "Bearer sk-caller"}
        if conversation is not None:
            headers["x-conversation-id"] = conversation
        return await self.client.post("/v1/chat/completions", json=body, headers=headers)


async def serve(
    tmp_path: Path, answer: Callable[[], httpx.Response], database_url: str | None = None
) -> AsyncIterator[Upstream]:
    """Run the app in pass-through mode before an upstream answering with `answer()`."""
    database_url = database_url or f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    settings = Settings(database_url=database_url, upstream_url="http://upstream.test/v1")
    app = create_app(settings, transport=httpx.MockTransport(lambda _: answer()))
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield Upstream(client, database_url)


def events(*payloads: str) -> Callable[[], httpx.Response]:
    """A stream of these raw `data:` payloads, then [DONE]."""
    raw = [b"data: " + p.encode() + b"\n\n" for p in payloads] + [b"data: [DONE]\n\n"]

    async def body() -> AsyncIterator[bytes]:
        for event in raw:
            yield event

    return lambda: httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


HEAD = '{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,'
ROLE = HEAD + '"delta":{"role":"assistant","content":""},"finish_reason":null}]}'
MALFORMED = {
    "tool-call index": HEAD + '"delta":{"tool_calls":[{"index":"x","function":{"name":"f"}}]}}]}',
    "function a string": HEAD + '"delta":{"tool_calls":[{"index":0,"function":"str"}]}}]}',
    "NaN index": HEAD + '"delta":{"tool_calls":[{"index":NaN,"function":{"name":"f"}}]}}]}',
    "content an object": HEAD + '"delta":{"content":{"text":"hi"}}}]}',
    "delta a list": HEAD + '"delta":[1,2]}]}',
}
STREAM = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
@pytest.mark.parametrize("chunk", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_a_malformed_stream_chunk_ends_the_stream_with_an_error_event_logged_502(
    tmp_path: Path, chunk: str, stateful: bool
) -> None:
    async for gateway in serve(tmp_path, events(ROLE, chunk)):
        response = await gateway.chat(STREAM, "conv-1" if stateful else None)
        assert response.status_code == 200  # the status line went out with the first chunk
        last = response.text.rstrip("\n").split("\n\n")[-1]
        assert last.startswith("data: {") and "[DONE]" not in response.text
        error = json.loads(last.removeprefix("data: "))["error"]
        assert error["code"] == "upstream_unreachable" and error["type"] == "upstream_error"
        attempts, messages = await rows(gateway.database_url)
        assert [a.status for a in attempts] == [502] and messages == 0


def completion(content: Any, usage: Any) -> Callable[[], httpx.Response]:
    """A plain chat completion with this content and usage."""
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": usage,
    }
    raw = json.dumps(body).encode()

    async def stream() -> AsyncIterator[bytes]:
        yield raw

    return lambda: httpx.Response(200, headers={"content-type": "application/json"}, content=stream())


HUGE_USAGE = [
    {"prompt_tokens": 2**64, "completion_tokens": 1, "total_tokens": 2**64 + 1},
    {"prompt_tokens": 1, "completion_tokens": 2**63, "total_tokens": 2**63 + 1},
    {"prompt_tokens": 2**40, "completion_tokens": 1, "total_tokens": 2**40},
    {"prompt_tokens": -5, "completion_tokens": 1, "total_tokens": -4},
    {"prompt_tokens": 1.5, "completion_tokens": 1, "total_tokens": 2.5},
    {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 2**70}},
]


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
@pytest.mark.parametrize("usage", HUGE_USAGE)
async def test_usage_out_of_range_is_recorded_as_null_and_the_row_kept(
    tmp_path: Path, database_url: str, usage: dict[str, Any], stateful: bool
) -> None:
    async for gateway in serve(tmp_path, completion("fine", usage), database_url):
        conversation = f"conv-{len(str(usage))}-{stateful}" if stateful else None
        before, _ = await rows(gateway.database_url)
        response = await gateway.chat(
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, conversation
        )
        assert response.status_code == 200, response.text
        attempts, _ = await rows(gateway.database_url)
        assert len(attempts) == len(before) + 1
        row = attempts[-1]
        assert row.status == 200 and row.prompt_tokens is None and row.completion_tokens is None
        assert row.cost_pusd is None


async def test_usage_out_of_range_in_a_stream_is_null_and_the_stream_whole(tmp_path: Path) -> None:
    usage = '{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],'
    usage += '"usage":{"prompt_tokens":99999999999999999999999,"completion_tokens":1}}'
    finish = HEAD + '"delta":{"content":"ok"},"finish_reason":"stop"}]}'
    async for gateway in serve(tmp_path, events(ROLE, finish, usage)):
        response = await gateway.chat(STREAM | {"stream_options": {"include_usage": True}}, "conv-huge")
        assert response.text.endswith("data: [DONE]\n\n")
        attempts, messages = await rows(gateway.database_url)
        assert [a.status for a in attempts] == [200] and attempts[0].prompt_tokens is None and messages == 2


@pytest.mark.parametrize("content", [{"text": "hi"}, ["hi"], 42, True])
async def test_assistant_content_that_is_not_a_string_is_an_invalid_reply_and_stores_nothing(
    tmp_path: Path, content: Any
) -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    async for gateway in serve(tmp_path, completion(content, usage)):
        response = await gateway.chat(
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, "conv-obj"
        )
        assert response.status_code == 502 and response.json()["error"]["type"] == "upstream_error"
        attempts, messages = await rows(gateway.database_url)
        assert [a.status for a in attempts] == [502] and messages == 0
        listed = await gateway.client.get(
            "/v1/conversations/conv-obj/messages", headers={"authorization": "Bearer sk-caller"}
        )
        assert listed.status_code == 404 or listed.json()["data"] == []
