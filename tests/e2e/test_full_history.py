"""Clients that resend the whole history (SDK objects, tool calls, LangChain style) are deduplicated, never
doubled."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers import (
    MODEL,
    TOOLS,
    sdk,
    sent_messages,
    stored,
    user,
)
from tests.servers import ServerProcess, upstream_requests

# --- full-history dedupe ------------------------------------------------------------------------------------


def _resend(message: Any, how: str) -> Any:
    if how == "object":
        return message
    if how == "model_dump":
        return message.model_dump()
    if how == "exclude_none":
        return message.model_dump(exclude_none=True)
    if how == "json_mode":
        return json.loads(message.model_dump_json())
    if how == "minimal":
        return {"role": "assistant", "content": message.content}
    if how == "extra_fields_ignored":
        return {
            "role": "assistant",
            "content": message.content,
            "refusal": "ignored",
            "annotations": [{"x": 1}],
        }
    if how == "null_name":
        return {"role": "assistant", "content": message.content, "name": None, "tool_calls": None}
    raise AssertionError(how)


RESENDS = [
    "object",
    "model_dump",
    "exclude_none",
    "json_mode",
    "minimal",
    "extra_fields_ignored",
    "null_name",
]


def test_full_history_clients_are_not_doubled(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """A LangChain-style client resends everything, including the SDK's own returned message objects."""
    client = sdk(gateway, api_key, conversation_id)
    history: list[Any] = [{"role": "system", "content": "sys"}, {"role": "user", "content": "first"}]
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=history)
    history += [reply.choices[0].message, {"role": "user", "content": "second"}]
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=history)
    assert reply.choices[0].message.content == "[4 messages] second"
    history += [reply.choices[0].message.model_dump(), {"role": "user", "content": "third"}]
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=history)
    assert reply.choices[0].message.content == "[6 messages] third"
    assert len(stored(gateway, api_key, conversation_id)) == 6
    assert len(upstream_requests(upstream, api_key)[-1]["body"]["messages"]) == 6


@pytest.mark.parametrize("how", RESENDS)
def test_full_history_with_sdk_message_objects_is_not_doubled(
    gateway: ServerProcess,
    upstream: ServerProcess,
    api_key: str,
    conversation_id: str,
    how: str,
) -> None:
    client = sdk(gateway, api_key, conversation_id)
    history: list[Any] = [{"role": "system", "content": "sys"}, user("first")]
    reply = client.chat.completions.create(model=MODEL, messages=history)
    if how == "null_name":  # a missing field equals null (deduped, so OpenAI never sees the null)
        history[1] = {"role": "user", "content": "first", "name": None}
    history += [_resend(reply.choices[0].message, how), user("second")]
    reply = client.chat.completions.create(model=MODEL, messages=history)
    assert reply.choices[0].message.content == "[4 messages] second"
    history += [_resend(reply.choices[0].message, how), user("third")]
    reply = client.chat.completions.create(model=MODEL, messages=history)
    assert reply.choices[0].message.content == "[6 messages] third"
    assert [m["role"] for m in stored(gateway, api_key, conversation_id)] == ["user", "assistant"] * 3


@pytest.mark.parametrize("how", ["object", "model_dump", "exclude_none", "json_mode", "empty_content"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_full_history_with_tool_calls_is_not_doubled(
    gateway: ServerProcess, api_key: str, conversation_id: str, how: str, stream: bool
) -> None:
    client = sdk(gateway, api_key, conversation_id)
    history: list[Any] = [user("weather in Rome?")]
    if stream:
        chunks = list(client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS, stream=True))
        deltas = [
            c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls
        ]
        call = {
            "id": deltas[0].id,
            "type": "function",
            "function": {
                "name": deltas[0].function.name,
                "arguments": "".join(d.function.arguments or "" for d in deltas),
            },
        }
        # what a client assembling the stream itself (LangChain) sends back
        assistant: Any = {
            "role": "assistant",
            "content": "" if how == "empty_content" else None,
            "tool_calls": [call],
        }
        if how in ("model_dump", "json_mode"):
            assistant = {**assistant, "refusal": None, "function_call": None, "audio": None}
    else:
        message = (
            client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS).choices[0].message
        )
        assert message.tool_calls
        call = message.tool_calls[0].model_dump()
        assistant = (
            {"role": "assistant", "content": "", "tool_calls": [call]}
            if how == "empty_content"
            else _resend(message, how)
        )
    history += [assistant, {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]
    reply = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS)
    assert reply.choices[0].message.content == "[3 messages] tool result: sunny"
    messages = stored(gateway, api_key, conversation_id)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[1]["tool_calls"][0]["id"] == call["id"]
    assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == {"input": "weather in Rome?"}


@pytest.mark.parametrize(
    "change",
    ["edited_assistant", "prefix_only", "other_name", "other_role_order"],
)
def test_a_history_that_differs_is_all_new(
    gateway: ServerProcess,
    upstream: ServerProcess,
    api_key: str,
    conversation_id: str,
    change: str,
) -> None:
    client = sdk(gateway, api_key, conversation_id)
    reply = client.chat.completions.create(model=MODEL, messages=[user("one")])
    answer = {"role": "assistant", "content": reply.choices[0].message.content}
    resent = {
        "edited_assistant": [user("one"), {**answer, "content": "something else"}],
        "prefix_only": [user("one")],
        "other_name": [{**user("one"), "name": "bob"}, answer],
        "other_role_order": [answer, user("one")],
    }[change]
    if change == "other_role_order":
        resent = [user("zero"), *resent]
    client.chat.completions.create(model=MODEL, messages=[*resent, user("two")])
    sent = sent_messages(upstream, api_key)
    assert sent[:2] == [user("one"), answer]  # the stored history, then everything the client sent
    assert sent[2:] == [*resent, user("two")]
    assert len(stored(gateway, api_key, conversation_id)) == 2 + len(resent) + 2


def test_resending_exactly_the_stored_history_does_not_double_it(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    client = sdk(gateway, api_key, conversation_id)
    reply = client.chat.completions.create(model=MODEL, messages=[user("one")])
    history = [user("one"), {"role": "assistant", "content": reply.choices[0].message.content}]
    client.chat.completions.create(model=MODEL, messages=history)
    assert sent_messages(upstream, api_key) == history
