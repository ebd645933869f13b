"""Black-box checks of issues 3 and 4, rule by rule: history budget, conversations API, usage and cost.

Only what the issues spell out is asserted (field names, shapes, precedence, status codes); each test
names the sentence it checks. The other e2e modules cover the main paths; these cover the rules they leave.
The history budget of issue 3 is the `sliding` strategy: since `stable` became the default (issue 12), the
gateways of this module run with GATEWAY_HISTORY_STRATEGY=sliding.
"""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from gateway.mock_upstream.replies import mock_reply, mock_usage
from gateway.tokens import count_message_tokens
from tests.servers import ServerProcess, base_env, gateway_server, upstream_requests

MODEL = "gpt-4o-mini"
USAGE_FIELDS = [
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
    "history_tokens",
    "cost_usd",
    "history_cost_usd",
    "unpriced_requests",
]
# Two entries where one is a prefix of the other: the longest prefix must win.
PRICES = {
    "gpt-4o": {"input": "2.5", "cached_input": "1.25", "output": "10"},
    "gpt-4o-mini": {"input": "0.15", "cached_input": "0.075", "output": "0.6"},
}


@pytest.fixture(scope="module")
def gateway(
    upstream: ServerProcess, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The module's gateway, with the `sliding` strategy (issue 3's trimming) as its server default."""
    tmp = tmp_path_factory.mktemp("bb-gw")
    server = gateway_server(tmp, upstream.url, database_url, history_strategy="sliding").start()
    try:
        yield server
    finally:
        server.stop()


def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def sdk(server: ServerProcess, api_key: str, conversation_id: str | None = None) -> OpenAI:
    headers = {"X-Conversation-Id": conversation_id} if conversation_id else {}
    return OpenAI(base_url=server.url + "/v1", api_key=api_key, default_headers=headers, max_retries=0)


def turn(
    server: ServerProcess, api_key: str, conversation_id: str, text: str, **headers: str
) -> tuple[dict[str, Any], httpx.Headers]:
    """One stateful turn over raw HTTP; returns the body and the headers."""
    response = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": text}]},
        headers=auth(api_key) | {"X-Conversation-Id": conversation_id} | headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json(), response.headers


def history(headers: httpx.Headers) -> tuple[int, int]:
    return int(headers["x-history-messages"]), int(headers["x-history-dropped"])


def last_sent(upstream: ServerProcess, api_key: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = upstream_requests(upstream, api_key)[-1]["body"]["messages"]
    return messages


def stored(server: ServerProcess, api_key: str, conversation_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.url}/v1/conversations/{conversation_id}/messages", headers=auth(api_key))
    assert response.status_code == 200, response.text
    return [{k: v for k, v in m.items() if k != "created_at"} for m in response.json()["data"]]


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
    assert [m["role"] for m in last_sent(upstream, api_key)] == ["user", "assistant"] * 4 + ["user"]


def test_a_turn_larger_than_the_token_limit_is_dropped_with_everything_older(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """'the longest suffix of whole stored turns that fits'; 'A turn larger than the limit is dropped'."""
    turn(gateway, api_key, conversation_id, "small")
    turn(gateway, api_key, conversation_id, "big " * 400)
    turn(gateway, api_key, conversation_id, "last")
    messages = stored(gateway, api_key, conversation_id)
    tokens = [count_message_tokens(m, MODEL) for m in messages]
    last_turn, big_turn = sum(tokens[4:]), sum(tokens[2:4])
    # Fits the last turn and the first, but not the big one between them: only the last turn (a suffix).
    limit = last_turn + sum(tokens[:2])
    assert limit < last_turn + big_turn
    _, headers = turn(gateway, api_key, conversation_id, "q1", **{"X-Max-History-Tokens": str(limit)})
    assert history(headers) == (2, 4)
    assert [m["content"] for m in last_sent(upstream, api_key)[:2]] == ["last", messages[5]["content"]]
    # One token short of the newest turn: nothing at all.
    stored_now = stored(gateway, api_key, conversation_id)
    newest = sum(count_message_tokens(m, MODEL) for m in stored_now[-2:])
    _, headers = turn(gateway, api_key, conversation_id, "q2", **{"X-Max-History-Tokens": str(newest - 1)})
    assert history(headers) == (0, 8)
    assert last_sent(upstream, api_key) == [{"role": "user", "content": "q2"}]


@pytest.mark.parametrize("limit", ["1", "3", "5"])
def test_an_odd_message_limit_never_starts_history_with_an_assistant(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str, limit: str
) -> None:
    """'Stored history sent never starts with anything but a user message.'"""
    for text in ("one", "two", "three"):
        turn(gateway, api_key, conversation_id, text)
    _, headers = turn(gateway, api_key, conversation_id, "four", **{"X-Max-History-Messages": limit})
    sent = last_sent(upstream, api_key)
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
    with sdk(gateway, api_key, conversation_id) as client:
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
    roles = [m["role"] for m in last_sent(upstream, api_key)]
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


# ---------------------------------------------------------------- Conversations API


def test_retrieve_has_the_issue_fields(gateway: ServerProcess, api_key: str, conversation_id: str) -> None:
    """GET /v1/conversations/{id}: the exact field names and types, Unix-second timestamps."""
    turn(gateway, api_key, conversation_id, "hello")
    body = httpx.get(f"{gateway.url}/v1/conversations/{conversation_id}", headers=auth(api_key)).json()
    assert set(body) >= {
        "id",
        "object",
        "created_at",
        "updated_at",
        "metadata",
        "system_prompt",
        "message_count",
        "settings",
        "usage",
    }
    assert body["id"] == conversation_id and body["object"] == "conversation"
    assert set(body["settings"]) >= {"max_history_messages", "max_history_tokens"}
    assert body["settings"]["max_history_messages"] is None and body["settings"]["max_history_tokens"] is None
    assert body["message_count"] == 2 and body["system_prompt"] is None
    for key in ("created_at", "updated_at"):
        assert isinstance(body[key], int) and abs(body[key] - datetime.now(UTC).timestamp()) < 600


def test_sdk_create_without_id_and_the_full_lifecycle(gateway: ServerProcess, api_key: str) -> None:
    """create (conv_ id), retrieve, update(metadata=...), items.list, delete with the official SDK."""
    with sdk(gateway, api_key) as client:
        created = client.conversations.create(metadata={"a": "1"})
        assert created.id.startswith("conv_") and created.object == "conversation"
        assert created.metadata == {"a": "1"}
        assert client.conversations.retrieve(created.id).metadata == {"a": "1"}
        updated = client.conversations.update(created.id, metadata={"b": "2"})
        assert updated.metadata == {"b": "2"}
        assert list(client.conversations.items.list(created.id)) == []
        deleted = client.conversations.delete(created.id)
        assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "conversation.deleted", True)
        with pytest.raises(openai.NotFoundError):
            client.conversations.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            client.conversations.items.list(created.id)


def test_sdk_update_on_an_unknown_id_is_404_and_creates_nothing(gateway: ServerProcess, api_key: str) -> None:
    """'On an unknown id -> 404 (update does not create).'"""
    missing = f"conv_missing{secrets.token_hex(4)}"
    with sdk(gateway, api_key) as client:
        with pytest.raises(openai.NotFoundError) as error:
            client.conversations.update(missing, metadata={"x": "y"})
        assert error.value.status_code == 404
        with pytest.raises(openai.NotFoundError):
            client.conversations.retrieve(missing)
        with pytest.raises(openai.NotFoundError):
            client.conversations.delete(missing)


def test_null_clears_every_setting(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """'null clears a setting', via the SDK's POST update and via PATCH."""
    url = f"{gateway.url}/v1/conversations/{conversation_id}"
    fields = {"metadata": {"k": "v"}, "system_prompt": "Be terse.", "max_history_messages": 0}
    assert httpx.post(
        f"{gateway.url}/v1/conversations", json={"id": conversation_id, **fields}, headers=auth(api_key)
    ).is_success
    turn(gateway, api_key, conversation_id, "one")
    assert last_sent(upstream, api_key)[0] == {"role": "system", "content": "Be terse."}
    with sdk(gateway, api_key) as client:
        client.conversations.update(conversation_id, metadata=None, extra_body={"system_prompt": None})
    assert httpx.patch(
        url, json={"max_history_messages": None, "max_history_tokens": None}, headers=auth(api_key)
    ).is_success
    body = httpx.get(url, headers=auth(api_key)).json()
    assert body["system_prompt"] is None
    assert not body["metadata"]  # null or {} (OpenAI's SDK types metadata as an optional object)
    assert body["settings"] == {"max_history_messages": None, "max_history_tokens": None} | {
        k: v for k, v in body["settings"].items() if k not in ("max_history_messages", "max_history_tokens")
    }
    _, headers = turn(gateway, api_key, conversation_id, "two")
    assert history(headers) == (2, 0)
    assert [m["role"] for m in last_sent(upstream, api_key)] == ["user", "assistant", "user"]


def test_list_pages_with_has_more_and_after(gateway: ServerProcess, upstream: ServerProcess) -> None:
    """'{"object": "list", "data", "has_more"}', newest activity first, has_more false at the end."""
    api_key = f"sk-list-{secrets.token_hex(6)}"
    ids = [f"conv-l{i}-{secrets.token_hex(3)}" for i in range(3)]
    for conversation_id in ids:
        turn(gateway, api_key, conversation_id, "hi")
    turn(gateway, api_key, ids[0], "again")  # ids[0] now has the newest activity
    seen, after = [], None
    while True:
        params = {"limit": "2"} | ({"after": after} if after else {})
        page = httpx.get(f"{gateway.url}/v1/conversations", params=params, headers=auth(api_key)).json()
        assert page["object"] == "list" and isinstance(page["has_more"], bool)
        for item in page["data"]:
            assert set(item) >= {"id", "created_at", "updated_at", "message_count"}
        seen += [item["id"] for item in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == [ids[0], ids[2], ids[1]]
    assert len(page["data"]) == 1  # 3 items in pages of 2: the last page has one and has_more false


def test_delete_then_the_next_turn_starts_empty_with_defaults(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """'the next turn with that id starts empty, with no system prompt and default settings'."""
    fields = {
        "id": conversation_id,
        "system_prompt": "Old.",
        "max_history_messages": 0,
        "metadata": {"a": "b"},
    }
    assert httpx.post(f"{gateway.url}/v1/conversations", json=fields, headers=auth(api_key)).is_success
    turn(gateway, api_key, conversation_id, "one")
    response = httpx.delete(f"{gateway.url}/v1/conversations/{conversation_id}", headers=auth(api_key))
    assert response.json() == {"id": conversation_id, "object": "conversation.deleted", "deleted": True}
    _, headers = turn(gateway, api_key, conversation_id, "fresh")
    assert history(headers) == (0, 0)
    assert last_sent(upstream, api_key) == [{"role": "user", "content": "fresh"}]
    _, headers = turn(gateway, api_key, conversation_id, "second")
    assert history(headers) == (2, 0)  # the old max_history_messages 0 is gone
    body = httpx.get(f"{gateway.url}/v1/conversations/{conversation_id}", headers=auth(api_key)).json()
    assert body["system_prompt"] is None and not body["metadata"] and body["message_count"] == 4
    assert body["settings"]["max_history_messages"] is None


def test_another_callers_conversation_is_404_everywhere(
    gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """'Unknown id or another caller's id -> 404, OpenAI-shaped.'"""
    turn(gateway, api_key, conversation_id, "mine")
    other = auth("sk-other-" + secrets.token_hex(6))
    base = f"{gateway.url}/v1/conversations/{conversation_id}"
    calls = [
        httpx.get(base, headers=other),
        httpx.patch(base, json={"metadata": {"x": "y"}}, headers=other),
        httpx.post(base, json={"metadata": {"x": "y"}}, headers=other),
        httpx.delete(base, headers=other),
        httpx.get(base + "/items", headers=other),
        httpx.get(base + "/messages", headers=other),
        httpx.get(base + "/usage", headers=other),
    ]
    for response in calls:
        assert response.status_code == 404, (response.request.method, response.request.url, response.text)
        assert set(response.json()["error"]) >= {"message", "type", "param", "code"}
    mine = httpx.get(base, headers=auth(api_key)).json()
    assert mine["message_count"] == 2 and not mine["metadata"]
    # Nor do they see it in their list.
    listed = httpx.get(f"{gateway.url}/v1/conversations", headers=other).json()["data"]
    assert conversation_id not in [item["id"] for item in listed]


def run_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = base_env() | {"GATEWAY_DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_cli_conversations_with_the_database_from_the_environment(
    gateway: ServerProcess, database_url: str, api_key: str, conversation_id: str
) -> None:
    """'gateway conversations list|show ID|delete ID in the CLI, reading the same database.'"""
    turn(gateway, api_key, conversation_id, "cli")
    listed = run_cli(database_url, "conversations", "list")
    assert listed.returncode == 0 and conversation_id in listed.stdout, listed.stderr
    shown = run_cli(database_url, "conversations", "show", conversation_id)
    assert shown.returncode == 0 and conversation_id in shown.stdout, shown.stderr
    deleted = run_cli(database_url, "conversations", "delete", conversation_id, "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert (
        httpx.get(f"{gateway.url}/v1/conversations/{conversation_id}", headers=auth(api_key)).status_code
        == 404
    )
    missing = run_cli(database_url, "conversations", "show", conversation_id)
    assert missing.returncode != 0


# ---------------------------------------------------------------- Usage and cost


@pytest.fixture(scope="module")
def priced(
    upstream: ServerProcess, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A gateway whose prices file has both `gpt-4o` and `gpt-4o-mini`."""
    tmp = tmp_path_factory.mktemp("bb-usage")
    path = tmp / "prices.json"
    path.write_text(json.dumps({m: {k: float(v) for k, v in p.items()} for m, p in PRICES.items()}))
    server = gateway_server(
        tmp, upstream.url, database_url, prices_file=str(path), history_strategy="sliding"
    ).start()
    try:
        yield server
    finally:
        server.stop()


def report(server: ServerProcess, api_key: str, path: str, **params: str) -> Any:
    response = httpx.get(server.url + path, params=params, headers=auth(api_key))
    assert response.status_code == 200, response.text
    return json.loads(response.text, parse_float=Decimal)


def file_cost(model: str, usage: dict[str, Any]) -> Decimal:
    price = {k: Decimal(v) for k, v in PRICES[model].items()}
    prompt, completion = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
    cached = int(usage["prompt_tokens_details"]["cached_tokens"])
    total: Decimal = (
        (prompt - cached) * price["input"] + cached * price["cached_input"] + completion * price["output"]
    )
    return total / 1_000_000


def check_usage_object(usage: dict[str, Any]) -> None:
    assert set(usage) >= {*USAGE_FIELDS, "by_model"}
    for entry in usage["by_model"]:
        assert set(entry) >= {"model", *USAGE_FIELDS}


def test_the_longest_prefix_in_the_prices_file_wins(
    priced: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """'gpt-4o-mini-2024-07-18 takes gpt-4o-mini, not gpt-4o'; the cost matches the file exactly."""
    long = "lorem ipsum dolor " * 40
    with sdk(priced, api_key, conversation_id) as client:
        for model in ("gpt-4o-mini", "gpt-4o"):
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": long + model}])
    usage = report(priced, api_key, f"/v1/conversations/{conversation_id}/usage")
    check_usage_object(usage)
    assert usage["conversation_id"] == conversation_id
    by_model = {entry["model"]: entry for entry in usage["by_model"]}
    assert set(by_model) == {"gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06"}
    sent = upstream_requests(upstream, api_key)
    for request, (dated, key) in zip(
        sent, [("gpt-4o-mini-2024-07-18", "gpt-4o-mini"), ("gpt-4o-2024-08-06", "gpt-4o")], strict=True
    ):
        messages = request["body"]["messages"]
        upstream_usage = mock_usage(messages, mock_reply(messages), request["body"]["model"])
        assert upstream_usage["prompt_tokens_details"]["cached_tokens"] > 0
        assert by_model[dated]["cost_usd"] == file_cost(key, upstream_usage)
    assert usage["cost_usd"] == sum(e["cost_usd"] for e in usage["by_model"])
    assert usage["unpriced_requests"] == 0


def test_streaming_is_counted_like_non_streaming_and_failures_count_as_requests(
    priced: ServerProcess, api_key: str
) -> None:
    """'Streaming calls are counted exactly like non-streaming ones'; failed calls count as requests."""
    a, b = f"conv-a-{secrets.token_hex(4)}", f"conv-b-{secrets.token_hex(4)}"
    with sdk(priced, api_key, a) as client:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "same words"}])
    with sdk(priced, api_key, b) as client:
        list(
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "same words"}], stream=True
            )
        )
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "FAULT:500"}])
    plain = report(priced, api_key, f"/v1/conversations/{a}/usage")
    streamed = report(priced, api_key, f"/v1/conversations/{b}/usage")
    assert plain["requests"] == 1 and streamed["requests"] == 2
    for field in USAGE_FIELDS:
        if field != "requests":
            assert streamed[field] == plain[field], field
    # The history of b holds only the streamed turn: the failure added nothing.
    assert httpx.get(f"{priced.url}/v1/conversations/{b}", headers=auth(api_key)).json()["message_count"] == 2


def test_history_tokens_and_history_cost_are_reported(
    priced: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """'reports show it beside the totals (history_tokens, history_cost_usd)'."""
    with sdk(priced, api_key, conversation_id) as client:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "first " * 50}])
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "second"}])
    usage = report(priced, api_key, f"/v1/conversations/{conversation_id}/usage")
    sent = upstream_requests(upstream, api_key)[-1]["body"]["messages"]
    assert usage["history_tokens"] == sum(count_message_tokens(m, MODEL) for m in sent[:-1])
    assert usage["history_cost_usd"] > 0
    assert usage["history_cost_usd"] < usage["cost_usd"]
    assert usage["by_model"][0]["history_tokens"] == usage["history_tokens"]


def test_unknown_prices_are_null_and_an_empty_csv_cell(priced: ServerProcess, conversation_id: str) -> None:
    """'cost_usd is null (never 0) and the request is counted in unpriced_requests'; CSV: an empty cell."""
    api_key = f"sk-unpriced-{secrets.token_hex(6)}"
    with sdk(priced, api_key, conversation_id) as client:
        client.chat.completions.create(model="my-local-model", messages=[{"role": "user", "content": "x"}])
    usage = report(priced, api_key, f"/v1/conversations/{conversation_id}/usage")
    assert usage["cost_usd"] is None and usage["unpriced_requests"] == 1
    assert usage["history_cost_usd"] is None  # no price: no history cost either, never 0
    assert usage["by_model"][0]["model"] == "my-local-model" and usage["by_model"][0]["cost_usd"] is None
    response = httpx.get(
        f"{priced.url}/v1/usage", params={"group_by": "model", "format": "csv"}, headers=auth(api_key)
    )
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.text)))
    header = rows[0]
    assert header[0] == "key" and header[1 : 1 + len(USAGE_FIELDS)] == USAGE_FIELDS
    assert len(rows) == 2
    row = dict(zip(header, rows[1], strict=True))
    assert row["key"] == "my-local-model" and row["cost_usd"] == "" and row["requests"] == "1"


def test_usage_list_shape_day_keys_and_since_until(priced: ServerProcess, conversation_id: str) -> None:
    """'{"object": "list", "data": [{"key", ...}]}', day keys YYYY-MM-DD, since/until dates or times."""
    api_key = f"sk-days-{secrets.token_hex(6)}"
    with sdk(priced, api_key, conversation_id) as client:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "today"}])
    now = datetime.now(UTC)
    today, tomorrow = now.date().isoformat(), (now + timedelta(days=1)).date().isoformat()
    by_day = report(priced, api_key, "/v1/usage", group_by="day")
    assert by_day["object"] == "list"
    assert [row["key"] for row in by_day["data"]] == [today]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", by_day["data"][0]["key"])
    check_usage_object(by_day["data"][0])
    by_conversation = report(priced, api_key, "/v1/usage", group_by="conversation")
    assert [row["key"] for row in by_conversation["data"]] == [conversation_id]
    hour_ago = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    offset = (now - timedelta(hours=1)).astimezone(timezone(timedelta(hours=2))).isoformat()
    windows = {
        (today, None): 1,
        (tomorrow, None): 0,
        (None, today): 1,  # README: a date `until` includes that whole day
        (None, tomorrow): 1,
        (hour_ago, None): 1,
        (offset, None): 1,
        (None, hour_ago): 0,
    }
    for (since, until), expected in windows.items():
        params = {k: v for k, v in {"since": since, "until": until}.items() if v}
        data = report(priced, api_key, "/v1/usage", group_by="day", **params)["data"]
        requests = sum(row["requests"] for row in data)
        assert requests == expected, (since, until, data)


def test_the_usage_cli_flags(priced: ServerProcess, database_url: str, conversation_id: str) -> None:
    """'gateway usage [--conversation ID] [--group-by ...] [--since ...] [--format table|json|csv]'."""
    api_key = f"sk-cli-{secrets.token_hex(6)}"
    with sdk(priced, api_key, conversation_id) as client:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "cli"}])
    api = report(priced, api_key, f"/v1/conversations/{conversation_id}/usage")
    as_json = run_cli(database_url, "usage", "--conversation", conversation_id, "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout, parse_float=Decimal)["requests"] == api["requests"] == 1
    as_csv = run_cli(database_url, "usage", "--group-by", "conversation", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    mine = [row for row in rows if row["key"] == conversation_id]
    assert len(mine) == 1 and Decimal(mine[0]["cost_usd"]) == api["cost_usd"]
    future = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    later = run_cli(database_url, "usage", "--group-by", "day", "--since", future, "--format", "json")
    assert later.returncode == 0 and json.loads(later.stdout)["data"] == []
    table = run_cli(database_url, "usage", "--group-by", "model")
    assert table.returncode == 0 and "gpt-4o-mini-2024-07-18" in table.stdout
    assert not table.stdout.lstrip().startswith(("{", "["))


def test_an_upstream_without_usage_is_null_never_zero(priced: ServerProcess, conversation_id: str) -> None:
    """'If an upstream reports no usage at all, record null, never a made-up 0, and say so in reports.'"""
    api_key = f"sk-nousage-{secrets.token_hex(6)}"
    with sdk(priced, api_key, conversation_id) as client:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "FAULT:nousage"}])
    usage = report(priced, api_key, f"/v1/conversations/{conversation_id}/usage")
    assert usage["requests"] == 1
    for field in ("prompt_tokens", "completion_tokens", "total_tokens", "cost_usd"):
        assert usage[field] is None, (field, usage)
    assert usage["unreported_usage_requests"] == 1  # the report says so
    with sdk(priced, api_key, conversation_id) as client:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "with usage"}])
    usage = report(priced, api_key, f"/v1/conversations/{conversation_id}/usage")
    assert usage["requests"] == 2 and usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["unreported_usage_requests"] == 1


def test_a_deleted_conversation_keeps_counting_in_reports(
    priced: ServerProcess, conversation_id: str
) -> None:
    """'its request-log rows keep their usage figures for cost reports'; reports are scoped to the caller."""
    api_key = f"sk-deleted-{secrets.token_hex(6)}"
    with sdk(priced, api_key, conversation_id) as client:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "soon gone"}])
    before = report(priced, api_key, "/v1/usage", group_by="conversation")["data"]
    deleted = httpx.delete(f"{priced.url}/v1/conversations/{conversation_id}", headers=auth(api_key))
    assert deleted.status_code == 200
    after = report(priced, api_key, "/v1/usage", group_by="conversation")["data"]
    assert after == before and after[0]["key"] == conversation_id and after[0]["requests"] == 1
    other = report(priced, f"sk-nobody-{secrets.token_hex(6)}", "/v1/usage", group_by="conversation")
    assert other == {"object": "list", "data": []}


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


def test_items_list_sdk_shapes_with_a_system_prompt_and_tools(
    gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """items: message items with input_text/output_text parts, function_call and function_call_output."""
    tools: list[Any] = [
        {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    ]
    with sdk(gateway, api_key, conversation_id) as client:
        first = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "system", "content": "Sys."}, {"role": "user", "content": "use a tool"}],
            tools=tools,
        )
        calls = first.choices[0].message.tool_calls
        assert calls
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "tool", "tool_call_id": calls[0].id, "content": "42"}],
            tools=tools,
        )
        items = list(client.conversations.items.list(conversation_id, order="asc"))
    kinds = [
        (item.type, getattr(item, "role", None)) for item in items if getattr(item, "role", None) != "system"
    ]
    assert kinds == [
        ("message", "user"),
        ("function_call", None),
        ("function_call_output", None),
        ("message", "assistant"),
    ]
    user_item, call_item, output_item, reply_item = [i for i in items if getattr(i, "role", None) != "system"]
    assert user_item.content[0].type == "input_text" and user_item.content[0].text == "use a tool"  # type: ignore[union-attr,index]
    assert call_item.call_id == calls[0].id and call_item.name == "lookup"  # type: ignore[union-attr]
    assert output_item.call_id == calls[0].id and output_item.output == "42"  # type: ignore[union-attr]
    assert reply_item.content[0].type == "output_text"  # type: ignore[union-attr,index]


def test_the_token_limit_ignores_the_system_prompt_and_the_new_messages(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """'it does not count the system prompt ... nor the request's new messages'; new messages go whole."""
    big_system = "rule " * 500
    with sdk(gateway, api_key, conversation_id) as client:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "system", "content": big_system}, {"role": "user", "content": "one"}],
        )
    history_tokens = sum(count_message_tokens(m, MODEL) for m in stored(gateway, api_key, conversation_id))
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
    sent = last_sent(upstream, api_key)
    assert sent[0] == {"role": "system", "content": big_system}
    assert sent[3:] == new
    # And with 0 the new messages still all go, after the system prompt.
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": new},
        headers=auth(api_key) | {"X-Conversation-Id": conversation_id, "X-Max-History-Tokens": "0"},
    )
    assert response.status_code == 200 and history(response.headers) == (0, 6)
    assert last_sent(upstream, api_key) == [{"role": "system", "content": big_system}, *new]


def test_a_full_last_page_has_no_more(gateway: ServerProcess) -> None:
    """'has_more is false on the last page', also when the last page is exactly full."""
    api_key = f"sk-full-{secrets.token_hex(6)}"
    for i in range(2):
        turn(gateway, api_key, f"conv-f{i}-{secrets.token_hex(3)}", "hi")
    page = httpx.get(f"{gateway.url}/v1/conversations", params={"limit": "2"}, headers=auth(api_key)).json()
    assert len(page["data"]) == 2 and page["has_more"] is False
    empty = httpx.get(
        f"{gateway.url}/v1/conversations", headers=auth(f"sk-none-{secrets.token_hex(4)}")
    ).json()
    assert empty["object"] == "list" and empty["data"] == [] and empty["has_more"] is False


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "1.5"])
def test_bad_list_limits_are_400(gateway: ServerProcess, api_key: str, limit: str) -> None:
    """A limit that is not a positive whole number is a 400, OpenAI-shaped, never a 500."""
    response = httpx.get(f"{gateway.url}/v1/conversations", params={"limit": limit}, headers=auth(api_key))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "limit"


def test_every_call_counts_and_by_model_adds_up(priced: ServerProcess, conversation_id: str) -> None:
    """Streams with include_usage off, a broken stream and an error all count; by_model sums to the totals."""
    api_key = f"sk-sums-{secrets.token_hex(6)}"
    with sdk(priced, api_key, conversation_id) as client:
        chunks = list(
            client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "quiet stream"}],
                stream=True,
                stream_options={"include_usage": False},
            )
        )
        assert all(chunk.usage is None for chunk in chunks)  # not forwarded, but still counted
        with pytest.raises(openai.APIError):
            list(
                client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "FAULT:cut"}], stream=True
                )
            )
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(
                model="o3-mini", messages=[{"role": "user", "content": "FAULT:503"}]
            )
    usage = report(priced, api_key, f"/v1/conversations/{conversation_id}/usage")
    assert usage["requests"] == 3
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert sum(entry["requests"] for entry in usage["by_model"]) == 3
    for field in ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "total_tokens"):
        assert sum(entry[field] or 0 for entry in usage["by_model"]) == usage[field], field


def test_sdk_items_list_pages_through_everything(
    gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """The SDK's items.list auto-pagination (limit, after, has_more/last_id) returns every stored message."""
    for text in ("one", "two", "three"):
        turn(gateway, api_key, conversation_id, text)
    with sdk(gateway, api_key) as client:
        ascending = list(client.conversations.items.list(conversation_id, limit=2, order="asc"))
        descending = list(client.conversations.items.list(conversation_id, limit=4, order="desc"))
        first_page = client.conversations.items.list(conversation_id, limit=2, order="asc")
    assert len(ascending) == 6
    assert [item.role for item in ascending] == ["user", "assistant"] * 3  # type: ignore[union-attr]
    assert [item.content[0].text for item in ascending[::2]] == ["one", "two", "three"]  # type: ignore[union-attr,index]
    assert [item.id for item in descending] == [item.id for item in reversed(ascending)]
    assert len({item.id for item in ascending}) == 6
    assert first_page.has_more is True and len(first_page.data) == 2


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
    assert last_sent(upstream, api_key) == sent[2:]
    messages = httpx.get(
        f"{gateway.url}/v1/conversations/{conversation_id}/messages", headers=auth(api_key)
    ).json()["data"]
    assert [m["content"] for m in messages] == [m["content"] for m in sent] + [
        response.json()["choices"][0]["message"]["content"]
    ]
    assert all(isinstance(m["created_at"], int) for m in messages)


def test_create_on_an_existing_id_never_overwrites_it(
    gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """Creating with an id that exists is refused (4xx, OpenAI-shaped) and the stored turn survives."""
    turn(gateway, api_key, conversation_id, "keep me")
    response = httpx.post(
        f"{gateway.url}/v1/conversations",
        json={"id": conversation_id, "system_prompt": "New."},
        headers=auth(api_key),
    )
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()["error"]) >= {"message", "type", "param", "code"}
    body = httpx.get(f"{gateway.url}/v1/conversations/{conversation_id}", headers=auth(api_key)).json()
    assert body["message_count"] == 2 and body["system_prompt"] is None
    # The same id under another caller is a different conversation: creating it works.
    other = httpx.post(f"{gateway.url}/v1/conversations", json={"id": conversation_id}, headers=auth("sk-x2"))
    assert other.status_code == 200, other.text
    assert other.json()["message_count"] == 0


@pytest.mark.parametrize("body", ["[]", '"text"', "null", "{bad json", "1"])
def test_update_bodies_that_are_not_objects_are_400(
    gateway: ServerProcess, api_key: str, conversation_id: str, body: str
) -> None:
    """A PATCH/POST body that is not a JSON object is a 400, not a 500, and changes nothing."""
    turn(gateway, api_key, conversation_id, "x")
    url = f"{gateway.url}/v1/conversations/{conversation_id}"
    for method in ("PATCH", "POST"):
        response = httpx.request(
            method, url, content=body, headers=auth(api_key) | {"Content-Type": "application/json"}
        )
        assert response.status_code == 400, (method, response.text)
    assert httpx.get(url, headers=auth(api_key)).json()["message_count"] == 2


def test_sdk_objects_carry_usage_and_settings(gateway: ServerProcess, api_key: str) -> None:
    """'The conversation objects of the conversations API include their usage'; settings on create/update."""
    with sdk(gateway, api_key) as client:
        created = client.conversations.create(extra_body={"max_history_tokens": 7})
        extra = created.model_extra or {}
        assert extra["usage"]["requests"] == 0
        assert extra["settings"] == extra["settings"] | {
            "max_history_tokens": 7,
            "max_history_messages": None,
        }
        updated = client.conversations.update(created.id, metadata={"a": "b"})
        assert (updated.model_extra or {})["settings"]["max_history_tokens"] == 7  # left out: kept
        client.conversations.delete(created.id)


def test_the_usage_cli_for_one_conversation_by_day(
    priced: ServerProcess, database_url: str, conversation_id: str
) -> None:
    """--conversation with --group-by and --format csv together."""
    api_key = f"sk-cliday-{secrets.token_hex(6)}"
    with sdk(priced, api_key, conversation_id) as client:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "d"}])
    result = run_cli(
        database_url, "usage", "--conversation", conversation_id, "--group-by", "day", "--format", "csv"
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["key"] for row in rows] == [datetime.now(UTC).date().isoformat()]
    assert rows[0]["requests"] == "1"


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
