"""The Responses API with openai-python, in process over the mock upstream's chat completions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.responses_support import RecordingTransport, gateway_app, plain, sdk

TOOL = {
    "type": "function",
    "name": "lookup",
    "description": "Look a word up.",
    "parameters": {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]},
}


@pytest.fixture
def upstream() -> RecordingTransport:
    """The mock upstream, recording the chat bodies."""
    return RecordingTransport()


@pytest.fixture
async def http(tmp_path: Path, upstream: RecordingTransport) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway in process."""
    async with gateway_app(tmp_path, upstream) as client:
        yield client


async def test_create_returns_a_response_object_the_sdk_parses(
    http: httpx.AsyncClient, upstream: RecordingTransport
) -> None:
    client = sdk(http)
    response = await client.responses.create(
        model="gpt-4o-mini", input="Hello there", instructions="Be brief."
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed"
    assert response.output_text == "[2 messages] Hello there"
    assert response.model == "gpt-4o-mini-2024-07-18"
    assert response.instructions == "Be brief."
    assert response.conversation is not None and response.conversation.id.startswith("conv_")
    assert response.usage is not None and response.usage.total_tokens > 0
    assert plain(response.output[0])["content"][0]["annotations"] == []
    sent = upstream.bodies[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there"},
    ]


async def test_previous_response_id_continues_and_instructions_apply_once(
    http: httpx.AsyncClient, upstream: RecordingTransport
) -> None:
    client = sdk(http)
    first = await client.responses.create(model="gpt-4o-mini", input="one", instructions="First rules.")
    second = await client.responses.create(model="gpt-4o-mini", input="two", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert second.conversation is not None and first.conversation is not None
    assert second.conversation.id == first.conversation.id
    assert upstream.bodies[-1]["messages"] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "[2 messages] one"},
        {"role": "user", "content": "two"},
    ]
    retrieved = await client.responses.retrieve(second.id)
    assert retrieved.output_text == second.output_text and retrieved.id == second.id
    items = await client.responses.input_items.list(second.id)
    assert [item.type for item in items.data] == ["message"]
    conv_items = await client.conversations.items.list(first.conversation.id, order="asc")
    texts = [(i.role, i.content[0].text) for i in conv_items.data if i.type == "message"]  # type: ignore[union-attr]
    assert texts == [
        ("user", "one"),
        ("assistant", "[2 messages] one"),
        ("user", "two"),
        ("assistant", "[3 messages] two"),
    ]


async def test_a_tool_round_trip(http: httpx.AsyncClient, upstream: RecordingTransport) -> None:
    client = sdk(http)
    first = await client.responses.create(model="gpt-4o-mini", input="weather", tools=[TOOL])  # type: ignore[list-item]
    (call,) = first.output
    assert call.type == "function_call" and call.name == "lookup"
    second = await client.responses.create(
        model="gpt-4o-mini",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[TOOL],  # type: ignore[list-item]
    )
    assert second.output_text.endswith("tool result: sunny")
    assert upstream.bodies[-1]["tools"] == [
        {
            "type": "function",
            "function": {k: TOOL[k] for k in ("name", "description", "parameters")},
        }
    ]


async def test_stream_helper_gives_the_final_response(http: httpx.AsyncClient) -> None:
    client = sdk(http)
    async with client.responses.stream(model="gpt-4o-mini", input="stream me please") as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert final.output_text == "[1 messages] stream me please"
    stored = await client.responses.retrieve(final.id)
    assert stored.output_text == final.output_text


async def test_streamed_tool_call(http: httpx.AsyncClient) -> None:
    client = sdk(http)
    tools: Any = [TOOL]
    events = await client.responses.create(
        model="gpt-4o-mini", input="stream a call", tools=tools, stream=True
    )
    seen = [event async for event in events]
    numbers = [event.sequence_number for event in seen]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    kinds = [event.type for event in seen]
    assert (
        "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    )
    final = plain(seen[-1])["response"]
    assert final["output"][0]["type"] == "function_call"
    assert final["output"][0]["arguments"] == '{"input": "stream a call"}'
