"""End-to-end: the history budget (headers, conversation settings, server defaults) through the openai SDK.

These tests pin the `sliding` strategy (the longest suffix of whole turns that fits); the gateway they run
against is started with GATEWAY_HISTORY_STRATEGY=sliding, since `stable` is the default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from gateway.tokens import count_message_tokens
from tests.servers import ServerProcess, gateway_server, upstream_requests

MODEL = "gpt-4o-mini"
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
    }
]


@pytest.fixture(scope="module")
def gateway(
    upstream: ServerProcess, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The module's gateway, with the `sliding` strategy as its server default."""
    tmp = tmp_path_factory.mktemp("gw")
    server = gateway_server(tmp, upstream.url, database_url, history_strategy="sliding").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(gateway: ServerProcess, api_key: str, conversation_id: str) -> Iterator[OpenAI]:
    """An SDK client of a fresh caller, on a fresh conversation."""
    headers = {"X-Conversation-Id": conversation_id}
    with OpenAI(base_url=gateway.url + "/v1", api_key=api_key, default_headers=headers) as sdk:
        yield sdk


def ask(client: OpenAI, text: str, **headers: str) -> tuple[str, dict[str, str]]:
    """One turn; returns the reply text and the response headers."""
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": text}], extra_headers=headers
    )
    return raw.parse().choices[0].message.content or "", dict(raw.headers)


def history_counts(headers: dict[str, str]) -> tuple[int, int]:
    """(X-History-Messages, X-History-Dropped)."""
    return int(headers["x-history-messages"]), int(headers["x-history-dropped"])


def sent_messages(upstream: ServerProcess, api_key: str) -> list[dict[str, Any]]:
    """The messages of the last request the mock upstream received from this caller."""
    messages: list[dict[str, Any]] = upstream_requests(upstream, api_key)[-1]["body"]["messages"]
    return messages


def patch(gateway: ServerProcess, api_key: str, conversation_id: str, **fields: Any) -> dict[str, Any]:
    """PATCH a conversation's settings."""
    response = httpx.patch(
        f"{gateway.url}/v1/conversations/{conversation_id}",
        json=fields,
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def three_turns(client: OpenAI) -> None:
    """A conversation with a system prompt and three stored turns (6 messages)."""
    client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "one"}],
    )
    ask(client, "two")
    ask(client, "three")


def test_message_limit_header_sends_the_newest_whole_turns(
    client: OpenAI, upstream: ServerProcess, api_key: str
) -> None:
    three_turns(client)
    reply, headers = ask(client, "four", **{"X-Max-History-Messages": "3"})
    assert history_counts(headers) == (2, 4)  # 3 messages allow one whole turn of 2
    assert reply == "[4 messages] four"  # system prompt + 2 history + the new message
    sent = sent_messages(upstream, api_key)
    assert [m["content"] for m in sent] == ["Be terse.", "three", "[6 messages] three", "four"]


def test_zero_sends_no_history_but_keeps_the_system_prompt(
    client: OpenAI, upstream: ServerProcess, api_key: str
) -> None:
    three_turns(client)
    _, headers = ask(client, "four", **{"X-Max-History-Tokens": "0"})
    assert history_counts(headers) == (0, 6)
    assert [m["content"] for m in sent_messages(upstream, api_key)] == ["Be terse.", "four"]
    _, headers = ask(client, "five", **{"X-Max-History-Messages": "0"})
    assert history_counts(headers) == (0, 8)


def test_token_limit_header_counts_stored_messages_with_the_model_tokenizer(
    client: OpenAI, gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    three_turns(client)
    stored = httpx.get(
        f"{gateway.url}/v1/conversations/{conversation_id}/messages",
        headers={"Authorization": f"Bearer {api_key}"},
    ).json()["data"]
    body = [{k: v for k, v in m.items() if k != "created_at"} for m in stored]
    last_turn = sum(count_message_tokens(m, MODEL) for m in body[-2:])
    two_turns = last_turn + sum(count_message_tokens(m, MODEL) for m in body[-4:-2])
    _, headers = ask(client, "four", **{"X-Max-History-Tokens": str(last_turn)})
    assert history_counts(headers) == (2, 4)
    _, headers = ask(client, "five", **{"X-Max-History-Tokens": str(last_turn - 1)})
    assert history_counts(headers) == (0, 8)  # the newest turn no longer fits whole: nothing is sent
    _, headers = ask(client, "six", **{"X-Max-History-Tokens": "1000000"})
    assert history_counts(headers) == (10, 0)
    assert two_turns > last_turn
    # both limits: the tighter one wins
    _, headers = ask(client, "seven", **{"X-Max-History-Tokens": "1000000", "X-Max-History-Messages": "2"})
    assert history_counts(headers) == (2, 10)


def test_dropped_messages_stay_stored(
    client: OpenAI, gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    three_turns(client)
    ask(client, "four", **{"X-Max-History-Messages": "0"})
    info = httpx.get(
        f"{gateway.url}/v1/conversations/{conversation_id}", headers={"Authorization": f"Bearer {api_key}"}
    ).json()
    assert info["message_count"] == 8
    _, headers = ask(client, "five")
    assert history_counts(headers) == (8, 0)


def test_headers_on_streamed_turns(client: OpenAI) -> None:
    three_turns(client)
    with client.chat.completions.with_streaming_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "four"}],
        stream=True,
        extra_headers={"X-Max-History-Messages": "4"},
    ) as response:
        assert history_counts(dict(response.headers)) == (4, 2)
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == "[6 messages] four"


def test_no_history_headers_without_a_conversation(gateway: ServerProcess, api_key: str) -> None:
    with OpenAI(base_url=gateway.url + "/v1", api_key=api_key) as stateless:
        raw = stateless.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    assert "x-history-messages" not in raw.headers and "x-history-dropped" not in raw.headers


def test_first_turn_reports_empty_history(client: OpenAI) -> None:
    _, headers = ask(client, "hello", **{"X-Max-History-Messages": "5"})
    assert history_counts(headers) == (0, 0)


@pytest.mark.parametrize("name", ["X-Max-History-Messages", "X-Max-History-Tokens"])
@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "", "+1", "0x10", "1_000", "1e3", "9999999999"])
def test_invalid_limit_headers_are_400_and_reach_nothing(
    client: OpenAI, upstream: ServerProcess, api_key: str, name: str, value: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "hi", **{name: value})
    error = caught.value.body
    assert isinstance(error, dict)
    assert (
        error["param"] == name
        and error["code"] == "invalid_header"
        and error["type"] == "invalid_request_error"
    )
    assert upstream_requests(upstream, api_key) == []


def test_non_ascii_digits_are_not_a_number(
    gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers={
            "Authorization": f"Bearer {api_key}",
            "X-Conversation-Id": conversation_id,
            "X-Max-History-Messages": "٣".encode(),  # ARABIC-INDIC DIGIT THREE
        },
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "X-Max-History-Messages"


def test_tool_calls_and_results_travel_with_their_turn(
    client: OpenAI, upstream: ServerProcess, api_key: str
) -> None:
    ask(client, "hello")
    call = client.chat.completions.create(
        model=MODEL, tools=TOOLS, messages=[{"role": "user", "content": "look it up"}]
    )
    call_id = call.choices[0].message.tool_calls[0].id  # type: ignore[index]
    client.chat.completions.create(
        model=MODEL, tools=TOOLS, messages=[{"role": "tool", "tool_call_id": call_id, "content": "42"}]
    )
    # stored: user, assistant | user, assistant(tool_calls), tool, assistant
    _, headers = ask(client, "next", **{"X-Max-History-Messages": "5"})
    assert history_counts(headers) == (4, 2)
    assert [m["role"] for m in sent_messages(upstream, api_key)] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    _, headers = ask(client, "again", **{"X-Max-History-Messages": "3"})
    assert history_counts(headers) == (2, 6)  # the 4-message tool turn does not fit: dropped whole


def test_tool_results_whose_call_was_trimmed_are_refused(
    client: OpenAI, upstream: ServerProcess, api_key: str
) -> None:
    call = client.chat.completions.create(
        model=MODEL, tools=TOOLS, messages=[{"role": "user", "content": "look it up"}]
    )
    call_id = call.choices[0].message.tool_calls[0].id  # type: ignore[index]
    before = len(upstream_requests(upstream, api_key))
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL,
            tools=TOOLS,
            messages=[{"role": "tool", "tool_call_id": call_id, "content": "42"}],
            extra_headers={"X-Max-History-Messages": "1"},
        )
    assert caught.value.code == "history_budget_too_small"
    assert len(upstream_requests(upstream, api_key)) == before
    # with room for the turn in progress, the same request goes through
    done = client.chat.completions.create(
        model=MODEL,
        tools=TOOLS,
        messages=[{"role": "tool", "tool_call_id": call_id, "content": "42"}],
        extra_headers={"X-Max-History-Messages": "2"},
    )
    assert done.choices[0].message.content == "[3 messages] tool result: 42"


def test_conversation_settings_apply_and_headers_override_them(
    client: OpenAI, gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    three_turns(client)
    info = patch(gateway, api_key, conversation_id, max_history_messages=2)
    assert info["settings"]["max_history_messages"] == 2
    _, headers = ask(client, "four")
    assert history_counts(headers) == (2, 4)
    _, headers = ask(client, "five", **{"X-Max-History-Messages": "4"})
    assert history_counts(headers) == (4, 4)
    patch(gateway, api_key, conversation_id, max_history_messages=None, max_history_tokens=0)
    _, headers = ask(client, "six")
    assert history_counts(headers) == (0, 10)
    patch(gateway, api_key, conversation_id, max_history_tokens=None)
    _, headers = ask(client, "seven")
    assert history_counts(headers) == (12, 0)


def test_server_defaults_apply_last(
    start_gateway: Callable[..., ServerProcess], database_url: str, api_key: str, conversation_id: str
) -> None:
    server = start_gateway(
        database_url, max_history_messages="2", max_history_tokens="100000", history_strategy="sliding"
    )
    headers = {"X-Conversation-Id": conversation_id}
    with OpenAI(base_url=server.url + "/v1", api_key=api_key, default_headers=headers) as sdk:
        three_turns(sdk)
        _, found = ask(sdk, "four")
        assert history_counts(found) == (2, 4)
        patch(server, api_key, conversation_id, max_history_messages=4)  # the conversation's setting wins
        _, found = ask(sdk, "five")
        assert history_counts(found) == (4, 4)
        _, found = ask(sdk, "six", **{"X-Max-History-Messages": "100"})  # the header wins over both
        assert history_counts(found) == (10, 0)
        _, found = ask(sdk, "seven", **{"X-Max-History-Tokens": "0"})  # the token default is replaced too
        assert history_counts(found) == (0, 12)
