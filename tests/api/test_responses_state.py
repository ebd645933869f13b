"""Responses as conversation turns: continue, fork, conversation ids, store: false, isolation, retries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.api.responses_support import RecordingTransport, gateway_app, plain, sdk

MODEL = "gpt-4o-mini"
AUTH = {"Authorization": "Bearer sk-test-one"}


@pytest.fixture
def upstream() -> RecordingTransport:
    """The mock upstream, recording the chat bodies."""
    return RecordingTransport()


@pytest.fixture
async def http(database_url: str, upstream: RecordingTransport) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway in process, on each database backend (a module shares one database)."""
    async with gateway_app(database_url, upstream) as client:
        yield client


async def post(http: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    """POST /v1/responses as the default caller."""
    return await http.post("/v1/responses", json={"model": MODEL, **body}, headers={**AUTH, **headers})


def sent_texts(body: dict[str, Any]) -> list[str]:
    """The contents of the messages an upstream body carried."""
    return [str(m.get("content")) for m in body["messages"]]


async def test_continuing_an_older_response_forks_and_leaves_the_original(
    http: httpx.AsyncClient, upstream: RecordingTransport
) -> None:
    first = (await post(http, {"input": "one"})).json()
    second = (await post(http, {"input": "two", "previous_response_id": first["id"]})).json()
    fork = (await post(http, {"input": "three", "previous_response_id": first["id"]})).json()
    assert second["conversation"] == first["conversation"]
    assert fork["conversation"]["id"] != first["conversation"]["id"]
    assert sent_texts(upstream.bodies[-1]) == ["one", "[1 messages] one", "three"]
    original = (
        await http.get(f"/v1/conversations/{first['conversation']['id']}/messages", headers=AUTH)
    ).json()
    assert [m["content"] for m in original["data"]] == ["one", "[1 messages] one", "two", "[3 messages] two"]
    # the fork continues on its own
    after = (await post(http, {"input": "four", "previous_response_id": fork["id"]})).json()
    assert after["conversation"] == fork["conversation"]
    assert sent_texts(upstream.bodies[-1]) == [
        "one",
        "[1 messages] one",
        "three",
        "[3 messages] three",
        "four",
    ]


async def test_a_chat_turn_after_a_response_makes_the_response_not_latest(
    http: httpx.AsyncClient, upstream: RecordingTransport
) -> None:
    first = (await post(http, {"input": "one"})).json()
    conversation = first["conversation"]["id"]
    chat = await http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "by chat"}]},
        headers={**AUTH, "X-Conversation-Id": conversation},
    )
    assert chat.status_code == 200
    forked = (await post(http, {"input": "again", "previous_response_id": first["id"]})).json()
    assert forked["conversation"]["id"] != conversation
    assert sent_texts(upstream.bodies[-1]) == ["one", "[1 messages] one", "again"]


async def test_chat_then_responses_then_chat_on_one_conversation(
    http: httpx.AsyncClient, upstream: RecordingTransport
) -> None:
    headers = {**AUTH, "X-Conversation-Id": "mixed-1"}
    system = {"role": "system", "content": "Stored prompt."}
    chat = {"model": MODEL, "messages": [system, {"role": "user", "content": "chat one"}]}
    assert (await http.post("/v1/chat/completions", json=chat, headers=headers)).status_code == 200
    response = (await post(http, {"input": "responses two", "conversation": "mixed-1"})).json()
    assert response["conversation"] == {"id": "mixed-1"}
    assert sent_texts(upstream.bodies[-1]) == [
        "Stored prompt.",
        "chat one",
        "[2 messages] chat one",
        "responses two",
    ]
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "chat three"}]}
    assert (await http.post("/v1/chat/completions", json=chat, headers=headers)).status_code == 200
    assert sent_texts(upstream.bodies[-1])[-2:] == ["[4 messages] responses two", "chat three"]
    # a response continues the conversation, chat turns included, by previous_response_id too
    follow = (await post(http, {"input": "four", "previous_response_id": response["id"]})).json()
    assert follow["conversation"]["id"] != "mixed-1"  # the chat turn moved it on: a fork
    client = sdk(http)
    items = await client.conversations.items.list("mixed-1", order="asc")
    kinds = [(item.type, getattr(item, "role", None)) for item in items.data]
    assert kinds == [("message", "user"), ("message", "assistant")] * 3


async def test_a_new_conversation_id_is_created_and_instructions_are_not_stored(
    http: httpx.AsyncClient, upstream: RecordingTransport
) -> None:
    first = (
        await post(http, {"input": "hi", "conversation": {"id": "fresh-1"}, "instructions": "Rule A"})
    ).json()
    assert first["conversation"] == {"id": "fresh-1"}
    assert sent_texts(upstream.bodies[-1]) == ["Rule A", "hi"]
    await post(http, {"input": "again", "conversation": "fresh-1"})
    assert sent_texts(upstream.bodies[-1]) == ["hi", "[2 messages] hi", "again"]
    conversation = (await http.get("/v1/conversations/fresh-1", headers=AUTH)).json()
    assert conversation["system_prompt"] is None and conversation["message_count"] == 4


async def test_store_false_uses_history_writes_nothing_and_is_not_retrievable(
    http: httpx.AsyncClient, upstream: RecordingTransport
) -> None:
    first = (await post(http, {"input": "one"})).json()
    conversation = first["conversation"]["id"]
    ephemeral = (
        await post(http, {"input": "two", "previous_response_id": first["id"], "store": False})
    ).json()
    assert ephemeral["store"] is False and ephemeral["status"] == "completed"
    assert sent_texts(upstream.bodies[-1]) == ["one", "[1 messages] one", "two"]
    assert (await http.get(f"/v1/responses/{ephemeral['id']}", headers=AUTH)).status_code == 404
    again = await post(http, {"input": "x", "previous_response_id": ephemeral["id"]})
    assert again.status_code == 404
    assert again.json()["error"]["param"] == "previous_response_id"
    stored = (await http.get(f"/v1/conversations/{conversation}", headers=AUTH)).json()
    assert stored["message_count"] == 2
    # still the latest: a stored follow-up continues the same conversation
    follow = (await post(http, {"input": "three", "previous_response_id": first["id"]})).json()
    assert follow["conversation"]["id"] == conversation
    # store: false from an older response sees the history up to it
    await post(http, {"input": "old", "previous_response_id": first["id"], "store": False})
    assert sent_texts(upstream.bodies[-1]) == ["one", "[1 messages] one", "old"]
    stateless = (await post(http, {"input": "alone", "store": False, "instructions": "R"})).json()
    assert stateless["conversation"] is None
    assert sent_texts(upstream.bodies[-1]) == ["R", "alone"]


async def test_another_callers_response_is_a_404_like_a_missing_one(http: httpx.AsyncClient) -> None:
    first = (await post(http, {"input": "mine"})).json()
    other = {"Authorization": "Bearer sk-test-other"}
    for path in (f"/v1/responses/{first['id']}", f"/v1/responses/{first['id']}/input_items"):
        response = await http.get(path, headers=other)
        assert response.status_code == 404
        missing = await http.get(path.replace(first["id"], "resp_missing"), headers=other)
        assert (
            missing.json()["error"]["message"].replace("resp_missing", first["id"])
            == response.json()["error"]["message"]
        )
    assert (await http.delete(f"/v1/responses/{first['id']}", headers=other)).status_code == 404
    stolen = await http.post(
        "/v1/responses",
        json={"model": MODEL, "input": "x", "previous_response_id": first["id"]},
        headers=other,
    )
    assert stolen.status_code == 404 and stolen.json()["error"]["code"] == "previous_response_not_found"


async def test_delete_forgets_the_response(http: httpx.AsyncClient) -> None:
    client = sdk(http)
    response = await client.responses.create(model=MODEL, input="to delete")
    await client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "x", "background": True}, "background"),
        ({"input": "x", "previous_response_id": "resp_1", "conversation": "c"}, "previous_response_id"),
        ({}, "input"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"input": "x", "prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"input": "x", "tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"input": 5}, "input"),
        ({"input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format.name"),
        ({"input": "x", "conversation": "bad id!"}, "conversation"),
        ({"input": "x", "conversation": {"id": "x" * 129}}, "conversation"),
    ],
)
async def test_what_cannot_be_honoured_is_a_400_naming_it(
    http: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    response = await post(http, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_sdk_default_fields_and_nulls_are_accepted_and_mapped(
    http: httpx.AsyncClient, upstream: RecordingTransport
) -> None:
    body = {
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "json please"}]}],
        "include": ["message.output_text.logprobs"],
        "truncation": "disabled",
        "top_logprobs": 0,
        "prompt_cache_key": "k1",
        "service_tier": "auto",
        "metadata": {"topic": "tests"},
        "max_output_tokens": 50,
        "temperature": 0.5,
        "top_p": 0.9,
        "reasoning": {"effort": "low", "summary": None},
        "text": {
            "format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}
        },
        "user": "u-1",
        "safety_identifier": "s-1",
        "previous_response_id": None,
        "conversation": None,
        "instructions": None,
        "stream": None,
        "store": None,
        "background": False,
        "parallel_tool_calls": True,
    }
    response = await post(http, body)
    assert response.status_code == 200, response.text
    sent = upstream.bodies[-1]
    assert sent["messages"] == [{"role": "user", "content": "json please"}]
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    }
    assert sent["reasoning_effort"] == "low" and sent["max_completion_tokens"] == 50
    assert sent["prompt_cache_key"] == "k1" and sent["user"] == "u-1" and sent["safety_identifier"] == "s-1"
    assert "parallel_tool_calls" not in sent  # chat completions refuse it without tools
    for key in ("include", "truncation", "metadata", "top_logprobs", "background", "store"):
        assert key not in sent
    parsed = response.json()
    assert parsed["metadata"] == {"topic": "tests"} and parsed["max_output_tokens"] == 50
    assert parsed["text"]["format"]["name"] == "answer" and parsed["store"] is True


async def test_an_upstream_failure_mid_stream_ends_with_response_failed_and_stores_nothing(
    http: httpx.AsyncClient,
) -> None:
    client = sdk(http)
    stream = await client.responses.create(
        model=MODEL, input="break FAULT:cut", stream=True, conversation="cut-1"
    )
    events = [event async for event in stream]
    assert events[-1].type == "response.failed"
    failed = plain(events[-1])["response"]
    assert failed["status"] == "failed" and failed["error"]["message"]
    assert (await http.get(f"/v1/responses/{failed['id']}", headers=AUTH)).status_code == 404
    assert (await http.get("/v1/conversations/cut-1", headers=AUTH)).status_code == 404


async def test_an_upstream_error_is_passed_on_with_its_status(http: httpx.AsyncClient) -> None:
    response = await post(http, {"input": "FAULT:400"})
    assert response.status_code == 400
    assert "error" in response.json()


async def test_a_retried_request_is_answered_from_the_record(
    http: httpx.AsyncClient, upstream: RecordingTransport
) -> None:
    body = {"input": "only once"}
    first = (await post(http, body)).json()
    calls = len(upstream.bodies)
    retried = await post(http, body, **{"x-stainless-retry-count": "1"})
    assert retried.json()["id"] == first["id"] and retried.headers["x-gateway-replayed"] == "true"
    keyed = (await post(http, {"input": "keyed"}, **{"Idempotency-Key": "k-1"})).json()
    again = await post(http, {"input": "keyed"}, **{"Idempotency-Key": "k-1"})
    assert again.json()["id"] == keyed["id"]
    assert len(upstream.bodies) == calls + 1
    fresh = (await post(http, body)).json()  # the same body without a retry marker is a new response
    assert fresh["id"] != first["id"]


async def test_a_retried_stream_replays_the_events(http: httpx.AsyncClient) -> None:
    client = sdk(http)
    async with client.responses.stream(
        model=MODEL, input="twice", extra_headers={"Idempotency-Key": "s-1"}
    ) as s:
        first = await s.get_final_response()
    async with client.responses.stream(
        model=MODEL, input="twice", extra_headers={"Idempotency-Key": "s-1"}
    ) as s:
        again = await s.get_final_response()
    assert again.id == first.id and again.output_text == first.output_text


async def test_input_items_are_paged_like_openai(http: httpx.AsyncClient) -> None:
    items = [{"role": "user", "content": f"part {n}"} for n in range(5)]
    response = (await post(http, {"input": items})).json()
    client = sdk(http)
    page = await client.responses.input_items.list(response["id"], limit=2)
    assert [plain(i)["content"][0]["text"] for i in page.data] == ["part 4", "part 3"]
    assert page.has_more is True
    pages = client.responses.input_items.list(response["id"], limit=2, order="asc")
    everything = [plain(i)["content"][0]["text"] async for i in pages]
    assert everything == [f"part {n}" for n in range(5)]


async def test_usage_is_recorded_under_the_conversation(http: httpx.AsyncClient) -> None:
    response = (await post(http, {"input": "count me"})).json()
    conversation = response["conversation"]["id"]
    usage = (await http.get(f"/v1/conversations/{conversation}/usage", headers=AUTH)).json()
    assert usage["total_tokens"] == response["usage"]["total_tokens"]


async def test_the_x_conversation_id_header_names_the_conversation_too(
    http: httpx.AsyncClient, upstream: RecordingTransport
) -> None:
    first = (await post(http, {"input": "by header"}, **{"X-Conversation-Id": "hdr-1"})).json()
    assert first["conversation"] == {"id": "hdr-1"}
    body = {"input": "body wins", "conversation": "body-1"}
    second = (await post(http, body, **{"X-Conversation-Id": "hdr-1"})).json()
    assert second["conversation"] == {"id": "body-1"}


async def test_passthrough_mode_forwards_responses_unchanged(tmp_path: Path) -> None:
    upstream = RecordingTransport()
    async with gateway_app(tmp_path, upstream, responses_mode="passthrough") as http:
        body = {"model": MODEL, "input": "to the upstream", "store": True}
        await http.post("/v1/responses", json=body, headers=AUTH)
        await http.get("/v1/responses/resp_1", headers=AUTH)
        await http.get("/v1/responses/resp_1/input_items", headers=AUTH)
    assert upstream.paths == [
        "POST /v1/responses",
        "GET /v1/responses/resp_1",
        "GET /v1/responses/resp_1/input_items",
    ]
    assert upstream.bodies == [body]


async def test_streams_with_store_false_are_stateless_or_use_the_history(
    http: httpx.AsyncClient, upstream: RecordingTransport
) -> None:
    client = sdk(http)
    first = await client.responses.create(model=MODEL, input="one")
    await client.responses.create(model=MODEL, input="two", previous_response_id=first.id)
    async with client.responses.stream(
        model=MODEL, input="old", previous_response_id=first.id, store=False
    ) as stream:
        final = await stream.get_final_response()
    assert final.output_text == "[3 messages] old" and plain(final)["store"] is False
    async with client.responses.stream(model=MODEL, input="alone", store=False) as stream:
        alone = await stream.get_final_response()
    assert alone.output_text == "[1 messages] alone" and alone.conversation is None
    assert (await http.get(f"/v1/responses/{alone.id}", headers=AUTH)).status_code == 404


async def test_retrieve_with_stream_replays_the_stored_events(http: httpx.AsyncClient) -> None:
    client = sdk(http)
    created = await client.responses.create(model=MODEL, input="replay me")
    events = [event async for event in await client.responses.retrieve(created.id, stream=True)]
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert plain(events[-1])["response"]["output"] == plain(created)["output"]


async def test_a_conversation_cost_cap_stops_responses_too(http: httpx.AsyncClient) -> None:
    created = await http.post(
        "/v1/conversations", json={"id": "capped-1", "max_cost_usd": 0.000000001}, headers=AUTH
    )
    assert created.status_code == 200, created.text
    assert (await post(http, {"input": "spend", "conversation": "capped-1"})).status_code == 200
    refused = await post(http, {"input": "more", "conversation": "capped-1"})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"


async def test_cancel_is_for_background_responses_only(http: httpx.AsyncClient) -> None:
    client = sdk(http)
    response = await client.responses.create(model=MODEL, input="not background")
    with pytest.raises(openai.BadRequestError):
        await client.responses.cancel(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.cancel("resp_missing")
