"""Agent frameworks' message shapes through the official SDK: each message reaches the upstream once.

The shapes are those the frameworks send: tool-call arguments re-serialized compact (pydantic-ai, the
Vercel AI SDK) or spaced (the `llm` CLI), content as text-part lists, windows of the history that the
client trims itself (llama-index's ChatMemoryBuffer, `llm -c`), and forced tool calls that are never
answered (instructor's Mode.TOOLS).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from asgi_lifespan import LifespanManager

from gateway.app import create_app
from gateway.config import Settings
from tests.inprocess import GATEWAY_URL, InProcess, inprocess_gateway

MODEL = "gpt-4o-mini"
KEY = "sk-framework-shapes"
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]},
    },
}
EXTRACT = {
    "type": "function",
    "function": {
        "name": "UserInfo",
        "description": "Correctly extracted `UserInfo` with all the required parameters with correct types",
        "parameters": {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]},
    },
}
FORCED = {"type": "function", "function": {"name": "UserInfo"}}


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[InProcess]:
    """The gateway in process in front of the mock upstream."""
    async with inprocess_gateway(tmp_path) as running:
        yield running


def conversation() -> str:
    """A fresh conversation id."""
    return f"conv-{secrets.token_hex(6)}"


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def text_parts(text: str) -> list[dict[str, Any]]:
    """Content as a framework sends it: a list of text parts (here split in two, with cache_control)."""
    half = len(text) // 2
    return [{"type": "text", "text": text[:half]}, {"type": "text", "text": text[half:], "cache_control": {}}]


def reserialized(message: Any, *, separators: tuple[str, str], content: Any = "") -> dict[str, Any]:
    """An assistant tool-call message rebuilt from the parsed arguments, as frameworks resend it."""
    calls = [
        {
            "id": call.id,
            "type": "function",
            "function": {
                "name": call.function.name,
                "arguments": json.dumps(json.loads(call.function.arguments), separators=separators),
            },
        }
        for call in message.tool_calls
    ]
    return {"role": "assistant", "content": content, "tool_calls": calls}


async def stored(gw: InProcess, conversation_id: str) -> list[dict[str, Any]]:
    """The conversation's stored messages."""
    async with gw.http_client() as http:
        response = await http.get(
            f"/v1/conversations/{conversation_id}/messages", headers={"Authorization": f"Bearer {KEY}"}
        )
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def roles(messages: list[dict[str, Any]]) -> list[str]:
    return [m["role"] for m in messages]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_a_tool_loop_resent_with_compact_arguments_reaches_the_upstream_once(
    gw: InProcess, stream: bool
) -> None:
    conv = conversation()
    question = user("What is the weather in Paris?")
    async with gw.sdk(KEY, conv) as client:
        if stream:
            chunks = await client.chat.completions.create(
                model=MODEL, messages=[question], tools=[WEATHER], stream=True
            )
            deltas = [c.choices[0].delta for c in [chunk async for chunk in chunks] if c.choices]
            (call_delta,) = [d.tool_calls[0] for d in deltas if d.tool_calls and d.tool_calls[0].id]
            arguments = "".join(d.tool_calls[0].function.arguments or "" for d in deltas if d.tool_calls)
            call_id, name = call_delta.id, call_delta.function.name
        else:
            first = await client.chat.completions.create(model=MODEL, messages=[question], tools=[WEATHER])
            call = first.choices[0].message.tool_calls[0]
            call_id, name, arguments = call.id, call.function.name, call.function.arguments
        assert arguments == '{"input": "What is the weather in Paris?"}'  # the mock answers spaced JSON
        compact = json.dumps(json.loads(arguments), separators=(",", ":"))
        resent_call = {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": compact}}
            ],
        }
        result = {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21 C"}
        second = await client.chat.completions.create(
            model=MODEL, messages=[question, resent_call, result], tools=[WEATHER]
        )
        assert second.choices[0].message.content == "[3 messages] tool result: sunny, 21 C"
        sent = gw.last_upstream_messages()
        assert roles(sent) == ["user", "assistant", "tool"]
        assert (
            sent[1]["tool_calls"][0]["function"]["arguments"] == arguments
        )  # the stored copy, byte for byte
        # the whole loop resent once more, plus a new question: only the question is new
        answer = {"role": "assistant", "content": second.choices[0].message.content}
        third = await client.chat.completions.create(
            model=MODEL, messages=[question, resent_call, result, answer, user("Thanks!")]
        )
        assert third.choices[0].message.content == "[5 messages] Thanks!"
    history = await stored(gw, conv)
    assert roles(history) == ["user", "assistant", "tool", "assistant", "user", "assistant"]
    assert history[1]["tool_calls"][0]["function"]["arguments"] == arguments


async def test_spaced_arguments_resent_against_an_upstream_that_answers_compact(tmp_path: Path) -> None:
    seen: list[list[dict[str, Any]]] = []

    def compact_upstream(request: httpx.Request) -> httpx.Response:
        messages = json.loads(request.content)["messages"]
        seen.append(messages)
        if messages[-1]["role"] == "user" and len(messages) == 1:
            arguments = '{"location":"Paris","unit":"celsius"}'
            call = {
                "id": "call_1",
                "type": "function",
                "function": {"name": "weather", "arguments": arguments},
            }
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
        else:
            message = {"role": "assistant", "content": f"[{len(messages)} messages]"}
        completion = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": MODEL,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
        }
        body = httpx.ByteStream(json.dumps(completion).encode())  # a stream, like a real response
        return httpx.Response(200, headers={"content-type": "application/json"}, stream=body)

    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}", upstream_url="http://up/v1")
    app = create_app(settings, transport=httpx.MockTransport(compact_upstream))
    async with LifespanManager(app) as manager:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url=GATEWAY_URL)
        headers = {"X-Conversation-Id": conversation()}
        async with openai.AsyncOpenAI(
            base_url=GATEWAY_URL + "/v1", api_key=KEY, http_client=http, default_headers=headers
        ) as client:
            question = user("Weather in Paris?")
            first = await client.chat.completions.create(model=MODEL, messages=[question], tools=[WEATHER])
            spaced = reserialized(first.choices[0].message, separators=(", ", ": "), content=None)
            assert (
                spaced["tool_calls"][0]["function"]["arguments"] == '{"location": "Paris", "unit": "celsius"}'
            )
            result = {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
            second = await client.chat.completions.create(model=MODEL, messages=[question, spaced, result])
    assert second.choices[0].message.content == "[3 messages]"
    assert seen[-1][1]["tool_calls"][0]["function"]["arguments"] == '{"location":"Paris","unit":"celsius"}'


async def test_a_history_resent_as_text_part_lists_is_deduped(gw: InProcess) -> None:
    conv = conversation()
    async with gw.sdk(KEY, conv) as client:
        first = await client.chat.completions.create(model=MODEL, messages=[user("one")])
        second = await client.chat.completions.create(model=MODEL, messages=[user("two")])
        resent = [
            {"role": "user", "content": text_parts("one")},
            {"role": "assistant", "content": text_parts(first.choices[0].message.content or "")},
            {"role": "user", "content": [{"type": "text", "text": "two"}]},
            second.choices[0].message.model_dump(exclude_unset=True),  # the SDK's own returned object
            {"role": "user", "content": text_parts("three")},
        ]
        third = await client.chat.completions.create(model=MODEL, messages=resent)
    assert third.choices[0].message.content == "[5 messages] three"
    sent = gw.last_upstream_messages()
    assert sent[0] == user("one") and sent[2] == user("two")  # the stored copies, not the resent lists
    assert len(await stored(gw, conv)) == 6


@pytest.mark.parametrize("length", range(1, 7))
async def test_a_suffix_window_of_the_history_is_deduped(gw: InProcess, length: int) -> None:
    conv = conversation()
    async with gw.sdk(KEY, conv) as client:
        history: list[dict[str, Any]] = []
        for text in ("one", "two", "three"):
            reply = await client.chat.completions.create(model=MODEL, messages=[user(text)])
            history += [user(text), {"role": "assistant", "content": reply.choices[0].message.content}]
        window = [{**m, "content": text_parts(m["content"])} for m in history[-length:]]
        reply = await client.chat.completions.create(model=MODEL, messages=[*window, user("four")])
    # a window that holds a whole turn is already stored; a lone resent message is not deduped
    expected = 7 if length >= 2 else 8
    assert reply.choices[0].message.content == f"[{expected} messages] four"
    sent = gw.last_upstream_messages()
    assert sent[:6] == history  # the stored copies
    assert len(await stored(gw, conv)) == expected + 1  # the new messages and the reply


async def test_a_user_who_repeats_the_last_question_is_not_deduped(gw: InProcess) -> None:
    async with gw.sdk(KEY, conversation()) as client:
        await client.chat.completions.create(model=MODEL, messages=[user("same")])
        again = await client.chat.completions.create(model=MODEL, messages=[user("same")])
    assert again.choices[0].message.content == "[3 messages] same"


async def test_forced_tool_calls_never_answered_then_a_normal_tool_round_trip(gw: InProcess) -> None:
    conv = conversation()
    async with gw.sdk(KEY, conv) as client:
        # instructor's Mode.TOOLS: each turn is a forced tool call whose result is never sent
        for turn, text in enumerate(("Jason is 25", "Sarah is 30", "Mike is 41"), start=1):
            reply = await client.chat.completions.create(
                model=MODEL, messages=[user(text)], tools=[EXTRACT], tool_choice=FORCED
            )
            call = reply.choices[0].message.tool_calls[0]
            assert call.function.name == "UserInfo" and json.loads(call.function.arguments) == {"input": text}
            # the unanswered calls of earlier turns are left out of what the upstream receives
            assert gw.last_upstream_messages() == [
                user(t) for t in ("Jason is 25", "Sarah is 30", "Mike is 41")[:turn]
            ]
        # then an ordinary tool round trip in the same conversation
        asked = await client.chat.completions.create(
            model=MODEL, messages=[user("Weather?")], tools=[WEATHER]
        )
        call = asked.choices[0].message.tool_calls[0]
        answered = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "tool", "tool_call_id": call.id, "content": "rain"}],
            tools=[WEATHER],
        )
        assert answered.choices[0].message.content == "[6 messages] tool result: rain"
        assert roles(gw.last_upstream_messages()) == ["user", "user", "user", "user", "assistant", "tool"]
        after = await client.chat.completions.create(model=MODEL, messages=[user("Thanks")], tools=[WEATHER])
        assert (
            after.choices[0].message.tool_calls[0].function.name == "weather"
        )  # the mock calls on a user turn
    assert roles(gw.last_upstream_messages()) == ["user"] * 4 + ["assistant", "tool", "assistant", "user"]
    history = await stored(gw, conv)  # stored messages never change: every tool call is still there
    assert roles(history) == ["user", "assistant"] * 4 + ["tool", "assistant", "user", "assistant"]
    assert all(m.get("tool_calls") for m in history[1:8:2])


async def test_instructor_resending_its_own_growing_history_also_works(gw: InProcess) -> None:
    """A client that keeps the unanswered tool calls in the history it resends is deduped too."""
    async with gw.sdk(KEY, conversation()) as client:
        messages: list[dict[str, Any]] = []
        for text in ("Jason is 25", "Sarah is 30", "Mike is 41"):
            messages.append(user(text))
            reply = await client.chat.completions.create(
                model=MODEL, messages=messages, tools=[EXTRACT], tool_choice=FORCED
            )
            messages.append(reserialized(reply.choices[0].message, separators=(",", ":"), content=None))
            assert roles(gw.last_upstream_messages()) == ["user"] * (len(messages) // 2)
