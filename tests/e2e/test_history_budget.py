"""End-to-end: the history budget (headers, conversation settings, server defaults) through the openai SDK.

These tests pin the `sliding` strategy (the longest suffix of whole turns that fits); the gateway they run
against is started with GATEWAY_HISTORY_STRATEGY=sliding, since `stable` is the default.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from gateway.tokens import count_message_tokens
from tests.helpers import MODEL, auth, history, sdk, sent_messages, stored, turn, without_created_at
from tests.servers import ServerProcess, gateway_app, upstream_requests

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
    server = gateway_app(upstream.url, database_url, history_strategy="sliding").start()
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


# ---------------------------------------------------------------- History budget


def test_header_beats_conversation_settings_for_both_limits(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """'first that is set wins: per-request headers ...; the conversation's settings'."""
    for text in ("one", "two"):
        turn(gateway, api_key, conversation_id, text)
    settings = {"max_history_messages": 0, "max_history_tokens": 0}
    assert httpx.patch(
        f"{gateway.url}/v1/conversations/{conversation_id}", json=settings, headers=auth(api_key)
    ).is_success
    assert history(turn(gateway, api_key, conversation_id, "three")[1]) == (0, 4)
    # The message header overrides the stored message limit only; the stored token limit of 0 still applies.
    _, headers = turn(gateway, api_key, conversation_id, "four", **{"X-Max-History-Messages": "100"})
    assert history(headers) == (0, 6)
    _, headers = turn(
        gateway,
        api_key,
        conversation_id,
        "five",
        **{"X-Max-History-Messages": "100", "X-Max-History-Tokens": "1000000"},
    )
    assert history(headers) == (8, 0)
    assert [m["role"] for m in sent_messages(upstream, api_key)] == ["user", "assistant"] * 4 + ["user"]


def test_a_turn_larger_than_the_token_limit_is_dropped_with_everything_older(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """'the longest suffix of whole stored turns that fits'; 'A turn larger than the limit is dropped'."""
    turn(gateway, api_key, conversation_id, "small")
    turn(gateway, api_key, conversation_id, "big " * 400)
    turn(gateway, api_key, conversation_id, "last")
    messages = without_created_at(stored(gateway, api_key, conversation_id))
    tokens = [count_message_tokens(m, MODEL) for m in messages]
    last_turn, big_turn = sum(tokens[4:]), sum(tokens[2:4])
    # Fits the last turn and the first, but not the big one between them: only the last turn (a suffix).
    limit = last_turn + sum(tokens[:2])
    assert limit < last_turn + big_turn
    _, headers = turn(gateway, api_key, conversation_id, "q1", **{"X-Max-History-Tokens": str(limit)})
    assert history(headers) == (2, 4)
    assert [m["content"] for m in sent_messages(upstream, api_key)[:2]] == ["last", messages[5]["content"]]
    # One token short of the newest turn: nothing at all.
    stored_now = without_created_at(stored(gateway, api_key, conversation_id))
    newest = sum(count_message_tokens(m, MODEL) for m in stored_now[-2:])
    _, headers = turn(gateway, api_key, conversation_id, "q2", **{"X-Max-History-Tokens": str(newest - 1)})
    assert history(headers) == (0, 8)
    assert sent_messages(upstream, api_key) == [{"role": "user", "content": "q2"}]


@pytest.mark.parametrize("limit", ["1", "3", "5"])
def test_an_odd_message_limit_never_starts_history_with_an_assistant(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str, limit: str
) -> None:
    """'Stored history sent never starts with anything but a user message.'"""
    for text in ("one", "two", "three"):
        turn(gateway, api_key, conversation_id, text)
    _, headers = turn(gateway, api_key, conversation_id, "four", **{"X-Max-History-Messages": limit})
    sent = sent_messages(upstream, api_key)
    kept = int(limit) - 1
    assert history(headers) == (kept, 6 - kept)
    assert sent[0]["role"] == "user"
    assert len(sent) == kept + 1


def test_a_tool_turn_is_kept_or_dropped_as_a_whole(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """'tool calls and their results always travel together'."""
    tools: list[Any] = [
        {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    ]
    with sdk(gateway, api_key, conversation_id, max_retries=0) as client:
        first = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "use a tool"}], tools=tools
        )
        call = first.choices[0].message.tool_calls
        assert call, first
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "tool", "tool_call_id": call[0].id, "content": "42"}],
            tools=tools,
        )
        # The stored turn is 4 messages: user, assistant(tool_calls), tool, assistant. 3 cannot hold it.
        # Each "next" turn is stored too (2 messages each), so the totals grow by 2 per call.
        for limit, expected in (("3", (0, 4)), ("5", (2, 4)), ("8", (8, 0))):
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL,
                messages=[{"role": "user", "content": "next"}],
                extra_headers={"X-Max-History-Messages": limit},
            )
            assert history(raw.headers) == expected  # type: ignore[arg-type]
    roles = [m["role"] for m in sent_messages(upstream, api_key)]
    assert roles == ["user", "assistant", "tool", "assistant"] + ["user", "assistant"] * 2 + ["user"]


@pytest.mark.parametrize("value", ["-1", "1.5", "abc", "", "1e3", "0x10", "+"])
@pytest.mark.parametrize("header", ["X-Max-History-Messages", "X-Max-History-Tokens"])
def test_invalid_budget_headers_are_400(
    gateway: ServerProcess, api_key: str, conversation_id: str, header: str, value: str
) -> None:
    """'Invalid values -> 400.'"""
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
        headers=auth(api_key) | {"X-Conversation-Id": conversation_id, header: value},
    )
    assert response.status_code == 400, response.text
    assert set(response.json()["error"]) >= {"message", "type", "param", "code"}


@pytest.mark.parametrize("value", [-1, 1.5, "5", True, [1], {"n": 1}])
@pytest.mark.parametrize("field", ["max_history_messages", "max_history_tokens"])
def test_invalid_settings_are_400(
    gateway: ServerProcess, api_key: str, conversation_id: str, field: str, value: Any
) -> None:
    """'Invalid values -> 400' for the conversation settings too; nothing is created."""
    response = httpx.post(
        f"{gateway.url}/v1/conversations", json={"id": conversation_id, field: value}, headers=auth(api_key)
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == field
    assert (
        httpx.get(f"{gateway.url}/v1/conversations/{conversation_id}", headers=auth(api_key)).status_code
        == 404
    )


def test_streamed_turns_carry_history_headers_under_a_budget(
    gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """'Response headers on every successful stateful turn' (streaming too), with a budget dropping some."""
    for text in ("one", "two"):
        turn(gateway, api_key, conversation_id, text)
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "s"}], "stream": True},
        headers=auth(api_key) | {"X-Conversation-Id": conversation_id, "X-Max-History-Messages": "2"},
    ) as response:
        assert response.status_code == 200
        body = response.read().decode()
        assert history(response.headers) == (2, 2)
    assert body.rstrip().endswith("data: [DONE]")


def test_server_defaults_for_both_limits_and_the_order(
    start_gateway: Any, database_url: str, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """Server defaults apply last: conversation settings and headers beat them; null restores them."""
    server = start_gateway(
        database_url, max_history_messages="2", max_history_tokens="1000000", history_strategy="sliding"
    )
    for text in ("one", "two", "three"):
        turn(server, api_key, conversation_id, text)
    assert history(turn(server, api_key, conversation_id, "a")[1]) == (2, 4)
    url = f"{server.url}/v1/conversations/{conversation_id}"
    assert httpx.patch(url, json={"max_history_messages": 4}, headers=auth(api_key)).is_success
    assert history(turn(server, api_key, conversation_id, "b")[1]) == (4, 4)
    headers = {"X-Max-History-Messages": "6"}
    assert history(turn(server, api_key, conversation_id, "c", **headers)[1]) == (6, 4)
    assert httpx.patch(url, json={"max_history_messages": None}, headers=auth(api_key)).is_success
    assert httpx.get(url, headers=auth(api_key)).json()["settings"]["max_history_messages"] is None
    assert history(turn(server, api_key, conversation_id, "d")[1]) == (2, 10)
    # The server token default applies too.
    small = start_gateway(database_url, max_history_tokens="1", history_strategy="sliding")
    assert history(turn(small, api_key, conversation_id, "e")[1]) == (0, 14)


@pytest.mark.parametrize("value", ["99999999999999999999999", "2147483648"])
def test_huge_budget_headers_are_never_a_500(
    gateway: ServerProcess, api_key: str, conversation_id: str, value: str
) -> None:
    """A limit beyond any database integer is either accepted (no limit in practice) or a 400."""
    turn(gateway, api_key, conversation_id, "one")
    for header in ("X-Max-History-Messages", "X-Max-History-Tokens"):
        response = httpx.post(
            gateway.url + "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
            headers=auth(api_key) | {"X-Conversation-Id": conversation_id, header: value},
        )
        assert response.status_code in (200, 400), response.text
        if response.status_code == 200:
            assert history(response.headers)[1] == 0


def test_the_token_limit_ignores_the_system_prompt_and_the_new_messages(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """'it does not count the system prompt ... nor the request's new messages'; new messages go whole."""
    big_system = "rule " * 500
    with sdk(gateway, api_key, conversation_id, max_retries=0) as client:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "system", "content": big_system}, {"role": "user", "content": "one"}],
        )
    history_tokens = sum(
        count_message_tokens(m, MODEL) for m in without_created_at(stored(gateway, api_key, conversation_id))
    )
    new = [
        {"role": "user", "content": "long new " * 300},
        {"role": "assistant", "content": "a prefilled answer"},
        {"role": "user", "content": "last"},
    ]
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": new},
        headers=auth(api_key)
        | {"X-Conversation-Id": conversation_id, "X-Max-History-Tokens": str(history_tokens)},
    )
    assert response.status_code == 200, response.text
    assert history(response.headers) == (2, 0)
    sent = sent_messages(upstream, api_key)
    assert sent[0] == {"role": "system", "content": big_system}
    assert sent[3:] == new
    # And with 0 the new messages still all go, after the system prompt.
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": new},
        headers=auth(api_key) | {"X-Conversation-Id": conversation_id, "X-Max-History-Tokens": "0"},
    )
    assert response.status_code == 200 and history(response.headers) == (0, 6)
    assert sent_messages(upstream, api_key) == [{"role": "system", "content": big_system}, *new]


def test_a_full_history_client_is_trimmed_like_any_other(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """A client resending the whole history (deduped) still gets the budget and the history headers."""
    body, _ = turn(gateway, api_key, conversation_id, "one")
    sent: list[dict[str, Any]] = [{"role": "user", "content": "one"}, body["choices"][0]["message"]]
    sent[1] = {"role": "assistant", "content": sent[1]["content"]}
    sent.append({"role": "user", "content": "two"})
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": sent},
        headers=auth(api_key) | {"X-Conversation-Id": conversation_id},
    )
    assert response.status_code == 200 and history(response.headers) == (2, 0)
    sent.append({"role": "assistant", "content": response.json()["choices"][0]["message"]["content"]})
    sent.append({"role": "user", "content": "three"})
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": sent},
        headers=auth(api_key) | {"X-Conversation-Id": conversation_id, "X-Max-History-Messages": "2"},
    )
    assert response.status_code == 200, response.text
    assert history(response.headers) == (2, 2)
    assert sent_messages(upstream, api_key) == sent[2:]
    messages = httpx.get(
        f"{gateway.url}/v1/conversations/{conversation_id}/messages", headers=auth(api_key)
    ).json()["data"]
    assert [m["content"] for m in messages] == [m["content"] for m in sent] + [
        response.json()["choices"][0]["message"]["content"]
    ]
    assert all(isinstance(m["created_at"], int) for m in messages)


def test_a_replayed_turn_still_carries_both_history_headers(
    gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """'Response headers on every successful stateful turn': a safe-retry replay answers 200 with both."""
    for text in ("one", "two"):
        turn(gateway, api_key, conversation_id, text)
    key = {"Idempotency-Key": f"key-{secrets.token_hex(4)}", "X-Max-History-Messages": "2"}
    _, first = turn(gateway, api_key, conversation_id, "three", **key)
    _, again = turn(gateway, api_key, conversation_id, "three", **key)
    assert again.get("x-gateway-replayed") == "true"
    assert history(first) == (2, 2)
    assert history(again) == history(first)
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "three"}], "stream": True},
        headers=auth(api_key) | {"X-Conversation-Id": conversation_id} | key,
    ) as streamed:
        assert streamed.status_code == 200
        streamed.read()
        assert streamed.headers.get("x-gateway-replayed") == "true"
        assert history(streamed.headers) == (2, 2)
