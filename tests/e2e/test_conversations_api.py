"""End-to-end: the conversations API through the official SDK (conversations.*) and plain HTTP."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner, Result
from openai import AsyncOpenAI, OpenAI
from sqlalchemy import func, select

from gateway.cli import main
from gateway.identity import caller_identity
from gateway.store.tables import ATTEMPTS, CONVERSATIONS, MESSAGES
from tests.helpers import (
    MODEL,
    auth,
    history,
    read_database,
    sdk,
    sent_messages,
    turn,
)
from tests.servers import ServerProcess, upstream_requests

TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
]


@pytest.fixture
def client(gateway: ServerProcess, api_key: str) -> Iterator[OpenAI]:
    """An SDK client of a fresh caller."""
    with OpenAI(base_url=gateway.url + "/v1", api_key=api_key) as sdk:
        yield sdk


def chat(client: OpenAI, conversation_id: str, text: str, **kwargs: Any) -> str:
    """One stateful turn; returns the reply text."""
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": text}],
        extra_headers={"X-Conversation-Id": conversation_id},
        **kwargs,
    )
    return reply.choices[0].message.content or ""


def call(gateway: ServerProcess, api_key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A plain HTTP call to the gateway as this caller."""
    headers = {"Authorization": f"Bearer {api_key}"}
    return httpx.request(method, gateway.url + path, headers=headers, **kwargs)


ORPHAN_MESSAGES = (
    select(func.count())
    .select_from(MESSAGES)
    .where(MESSAGES.c.conversation_pk.not_in(select(CONVERSATIONS.c.pk)))
)


def test_create_retrieve_update_delete_with_the_sdk(client: OpenAI) -> None:
    created = client.conversations.create(metadata={"topic": "weather"})
    assert created.id.startswith("conv_") and len(created.id) == 53
    assert created.object == "conversation" and created.metadata == {"topic": "weather"}
    assert isinstance(created.created_at, int)
    extra = created.model_extra or {}
    assert extra["message_count"] == 0 and extra["system_prompt"] is None
    assert extra["updated_at"] == created.created_at
    assert extra["settings"] == {
        "max_history_messages": None,
        "max_history_tokens": None,
        "max_cost_usd": None,
        "history_strategy": None,
        "summary_model": None,
    }
    assert extra["summary"] is None
    assert extra["usage"]["requests"] == 0 and extra["usage"]["cost_usd"] == 0

    found = client.conversations.retrieve(created.id)
    assert found.id == created.id and found.metadata == {"topic": "weather"}

    updated = client.conversations.update(created.id, metadata={"topic": "rain", "lang": "en"})
    assert updated.metadata == {"topic": "rain", "lang": "en"}
    assert client.conversations.retrieve(created.id).metadata == {"topic": "rain", "lang": "en"}
    cleared = client.conversations.update(created.id, metadata=None)
    assert cleared.metadata == {}

    deleted = client.conversations.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "conversation.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.delete(created.id)


def test_create_with_id_and_settings_applies_to_the_first_turn(
    client: OpenAI, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    created = client.conversations.create(
        extra_body={
            "id": conversation_id,
            "system_prompt": "Answer in French.",
            "max_history_messages": 2,
            "max_history_tokens": 500,
            "max_cost_usd": 1.25,
            "history_strategy": "sliding",  # the trimming this test pins (stable is the default)
        }
    )
    extra = created.model_extra or {}
    assert created.id == conversation_id and extra["system_prompt"] == "Answer in French."
    assert extra["settings"] == {
        "max_history_messages": 2,
        "max_history_tokens": 500,
        "max_cost_usd": 1.25,
        "history_strategy": "sliding",
        "summary_model": None,
    }
    chat(client, conversation_id, "one")
    assert upstream_requests(upstream, api_key)[-1]["body"]["messages"][0] == {
        "role": "system",
        "content": "Answer in French.",
    }
    chat(client, conversation_id, "two")
    assert chat(client, conversation_id, "three") == "[4 messages] three"  # system + 1 whole turn + new
    with pytest.raises(openai.ConflictError) as caught:
        client.conversations.create(extra_body={"id": conversation_id})
    assert caught.value.code == "conversation_exists"
    assert client.conversations.retrieve(conversation_id).model_extra["message_count"] == 6  # type: ignore[index]


def test_patch_and_post_update_every_field(
    gateway: ServerProcess, api_key: str, client: OpenAI, conversation_id: str
) -> None:
    chat(client, conversation_id, "hello")
    fields = {
        "metadata": {"a": "b"},
        "system_prompt": "Be brief.",
        "max_history_messages": 10,
        "max_history_tokens": 0,
        "max_cost_usd": 0.000001,
    }
    response = call(gateway, api_key, "PATCH", f"/v1/conversations/{conversation_id}", json=fields)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["metadata"] == {"a": "b"} and body["system_prompt"] == "Be brief."
    assert body["settings"] == {
        "max_history_messages": 10,
        "max_history_tokens": 0,
        "max_cost_usd": 0.000001,
        "history_strategy": None,
        "summary_model": None,
    }
    assert body["message_count"] == 2 and body["usage"]["requests"] == 1
    # null clears; fields left out stay as they were
    response = call(
        gateway,
        api_key,
        "POST",
        f"/v1/conversations/{conversation_id}",
        json={"system_prompt": None, "max_history_tokens": None},
    )
    body = response.json()
    assert body["system_prompt"] is None and body["metadata"] == {"a": "b"}
    assert body["settings"] == {
        "max_history_messages": 10,
        "max_history_tokens": None,
        "max_cost_usd": 0.000001,
        "history_strategy": None,
        "summary_model": None,
    }
    assert client.conversations.retrieve(conversation_id).model_extra["system_prompt"] is None  # type: ignore[index]


def test_update_never_creates(gateway: ServerProcess, api_key: str, client: OpenAI) -> None:
    for method in ("PATCH", "POST"):
        response = call(gateway, api_key, method, "/v1/conversations/never-made", json={"metadata": {}})
        assert response.status_code == 404
        assert response.json()["error"] == {
            "message": "No conversation found with id 'never-made'.",
            "type": "invalid_request_error",
            "param": "conversation_id",
            "code": "not_found",
        }
    with pytest.raises(openai.NotFoundError):
        client.conversations.update("never-made", metadata={"a": "b"})
    assert call(gateway, api_key, "GET", "/v1/conversations/never-made").status_code == 404


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"metadata": ["k"]}, "metadata"),
        ({"system_prompt": 5}, "system_prompt"),
        ({"system_prompt": ""}, "system_prompt"),
        ({"max_history_messages": -1}, "max_history_messages"),
        ({"max_history_messages": "5"}, "max_history_messages"),
        ({"max_history_messages": True}, "max_history_messages"),
        ({"max_history_tokens": 2.5}, "max_history_tokens"),
        ({"max_history_tokens": 2**31}, "max_history_tokens"),
        ({"max_cost_usd": -0.5}, "max_cost_usd"),
        ({"max_cost_usd": "1"}, "max_cost_usd"),
        ({"max_cost_usd": 1e30}, "max_cost_usd"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_fields_are_400_with_param(
    gateway: ServerProcess, api_key: str, client: OpenAI, body: dict[str, Any], param: str
) -> None:
    conversation = client.conversations.create(metadata={"keep": "me"})
    for method, path in (
        ("PATCH", f"/v1/conversations/{conversation.id}"),
        ("POST", f"/v1/conversations/{conversation.id}"),
        ("POST", "/v1/conversations"),
    ):
        response = call(gateway, api_key, method, path, json=body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param and error["type"] == "invalid_request_error"
    assert client.conversations.retrieve(conversation.id).metadata == {"keep": "me"}  # nothing changed


def test_metadata_at_the_limits_is_accepted(client: OpenAI) -> None:
    metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    assert client.conversations.create(metadata=metadata).metadata == metadata


def test_create_rejects_bad_ids_items_and_bodies(gateway: ServerProcess, api_key: str) -> None:
    for body, param in (
        ({"id": "has space"}, "id"),
        ({"id": 5}, "id"),
        ({"id": "x" * 129}, "id"),
        ({"items": [{"role": "user", "content": "hi"}]}, "items"),
    ):
        response = call(gateway, api_key, "POST", "/v1/conversations", json=body)
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
    response = call(gateway, api_key, "POST", "/v1/conversations", content=b"[1]")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    response = call(gateway, api_key, "POST", "/v1/conversations")  # an empty body is an empty object
    assert response.status_code == 200 and response.json()["id"].startswith("conv_")


def test_list_pages_newest_activity_first(gateway: ServerProcess, api_key: str, client: OpenAI) -> None:
    ids = [client.conversations.create(extra_body={"id": f"list-{i}"}).id for i in range(5)]
    chat(client, ids[1], "bump")  # activity moves it to the front
    expected = [ids[1], ids[4], ids[3], ids[2], ids[0]]
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = call(gateway, api_key, "GET", "/v1/conversations", params=params).json()
        assert page["object"] == "list"
        seen += [c["id"] for c in page["data"]]
        pages += 1
        if not page["has_more"]:
            break
        assert page["last_id"] == page["data"][-1]["id"]
        after = page["last_id"]
    assert seen == expected and pages == 3
    first = call(gateway, api_key, "GET", "/v1/conversations").json()
    assert [c["id"] for c in first["data"]] == expected and first["has_more"] is False
    bumped = first["data"][0]
    assert bumped["message_count"] == 2 and bumped["updated_at"] >= bumped["created_at"]
    assert bumped["usage"]["requests"] == 1 and first["data"][1]["usage"]["requests"] == 0
    assert set(bumped) >= {
        "id",
        "object",
        "created_at",
        "updated_at",
        "metadata",
        "message_count",
        "settings",
    }
    for params in ({"limit": 0}, {"limit": 101}, {"limit": "x"}, {"after": "no-such-conversation"}):
        response = call(gateway, api_key, "GET", "/v1/conversations", params=params)
        assert response.status_code == 400, params


def test_messages_pages_oldest_first(
    gateway: ServerProcess, api_key: str, client: OpenAI, conversation_id: str
) -> None:
    for text in ("one", "two", "three"):
        chat(client, conversation_id, text)
    path = f"/v1/conversations/{conversation_id}/messages"
    everything = call(gateway, api_key, "GET", path).json()
    assert [m["content"] for m in everything["data"]] == [
        "one",
        "[1 messages] one",
        "two",
        "[3 messages] two",
        "three",
        "[5 messages] three",
    ]
    assert everything["has_more"] is False
    assert all(set(m) == {"role", "content", "created_at"} for m in everything["data"])
    page = call(gateway, api_key, "GET", path, params={"limit": 4}).json()
    assert [m["content"] for m in page["data"]] == ["one", "[1 messages] one", "two", "[3 messages] two"]
    assert page["has_more"] is True and page["first_id"] == "msg_0" and page["last_id"] == "msg_3"
    rest = call(gateway, api_key, "GET", path, params={"limit": 4, "after": page["last_id"]}).json()
    assert [m["content"] for m in rest["data"]] == ["three", "[5 messages] three"]
    assert rest["has_more"] is False
    for params in ({"limit": 0}, {"limit": 1001}, {"after": "5"}, {"after": "msg_x"}):
        assert call(gateway, api_key, "GET", path, params=params).status_code == 400, params


def test_items_are_responses_items_that_the_sdk_parses(client: OpenAI, conversation_id: str) -> None:
    chat(client, conversation_id, "hello")
    ask = client.chat.completions.create(
        model=MODEL,
        tools=TOOLS,
        messages=[{"role": "user", "content": "look it up"}],
        extra_headers={"X-Conversation-Id": conversation_id},
    )
    call_id = ask.choices[0].message.tool_calls[0].id  # type: ignore[index]
    client.chat.completions.create(
        model=MODEL,
        tools=TOOLS,
        messages=[{"role": "tool", "tool_call_id": call_id, "content": "42"}],
        extra_headers={"X-Conversation-Id": conversation_id},
    )
    items = list(client.conversations.items.list(conversation_id, order="asc"))
    assert [i.type for i in items] == [
        "message",
        "message",
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    first = items[0]
    assert first.type == "message" and first.role == "user" and first.status == "completed"
    assert first.content[0].type == "input_text" and first.content[0].text == "hello"
    answer = items[1]
    assert answer.type == "message" and answer.role == "assistant"
    assert answer.content[0].type == "output_text" and answer.content[0].text == "[1 messages] hello"
    function_call = items[3]
    assert function_call.type == "function_call" and function_call.call_id == call_id
    assert function_call.name == "lookup"
    output = items[4]
    assert output.type == "function_call_output" and output.call_id == call_id and output.output == "42"
    assert len({i.id for i in items}) == 6
    # the default order is OpenAI's: newest first; the SDK pages through `after` = last_id
    newest_first = list(client.conversations.items.list(conversation_id, limit=2))
    assert [i.id for i in newest_first] == [i.id for i in reversed(items)]
    oldest_first = list(client.conversations.items.list(conversation_id, limit=1, order="asc"))
    assert [i.id for i in oldest_first] == [i.id for i in items]
    page = client.conversations.items.list(conversation_id, limit=3, order="asc")
    assert page.has_more is True and page.last_id == items[2].id and len(page.data) == 3
    middle = client.conversations.items.list(conversation_id, limit=2, order="asc", after=items[3].id)
    assert [i.id for i in middle.data] == [items[4].id, items[5].id] and middle.has_more is False
    for expected in items:
        assert client.conversations.items.retrieve(expected.id, conversation_id=conversation_id) == expected
    for missing in ("msg_99", "fc_0_0", "nope"):
        with pytest.raises(openai.NotFoundError):
            client.conversations.items.retrieve(missing, conversation_id=conversation_id)


def test_items_and_messages_validate_queries(
    gateway: ServerProcess, api_key: str, client: OpenAI, conversation_id: str
) -> None:
    chat(client, conversation_id, "hello")
    path = f"/v1/conversations/{conversation_id}/items"
    for params in ({"limit": 0}, {"limit": 101}, {"order": "up"}, {"after": "nope"}):
        response = call(gateway, api_key, "GET", path, params=params)
        assert response.status_code == 400 and response.json()["error"]["param"] in (
            "limit",
            "order",
            "after",
        )
    empty = client.conversations.create()
    page = client.conversations.items.list(empty.id)
    assert page.data == [] and page.has_more is False


def test_unknown_and_other_callers_conversations_are_404(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, client: OpenAI, conversation_id: str
) -> None:
    chat(client, conversation_id, "mine")
    other = f"sk-other-{secrets.token_hex(6)}"
    with OpenAI(base_url=gateway.url + "/v1", api_key=other) as intruder:
        for attempt in (
            lambda: intruder.conversations.retrieve(conversation_id),
            lambda: intruder.conversations.update(conversation_id, metadata={"x": "y"}),
            lambda: intruder.conversations.delete(conversation_id),
            lambda: intruder.conversations.items.list(conversation_id),
        ):
            with pytest.raises(openai.NotFoundError):
                attempt()
        assert conversation_id not in [
            c["id"] for c in call(gateway, other, "GET", "/v1/conversations").json()["data"]
        ]
        # the same id is a separate conversation for another caller
        assert chat(intruder, conversation_id, "theirs") == "[1 messages] theirs"
    assert (
        call(gateway, other, "GET", f"/v1/conversations/{conversation_id}/messages").json()["data"][0][
            "content"
        ]
        == "theirs"
    )
    mine = call(gateway, api_key, "GET", f"/v1/conversations/{conversation_id}/messages").json()["data"]
    assert [m["content"] for m in mine] == ["mine", "[1 messages] mine"]
    for path in ("/v1/conversations/nope/messages", "/v1/conversations/nope/items", "/v1/conversations/nope"):
        assert call(gateway, api_key, "GET", path).status_code == 404
    assert call(gateway, api_key, "DELETE", "/v1/conversations/nope").status_code == 404


def test_other_paths_and_methods_stay_in_the_gateway(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, client: OpenAI
) -> None:
    conversation = client.conversations.create()
    assert call(gateway, api_key, "PUT", f"/v1/conversations/{conversation.id}").status_code == 405
    assert call(gateway, api_key, "DELETE", "/v1/conversations").status_code == 405
    assert call(gateway, api_key, "POST", f"/v1/conversations/{conversation.id}/messages").status_code == 405
    assert (
        call(gateway, api_key, "POST", f"/v1/conversations/{conversation.id}/items", json={}).status_code
        == 405
    )
    response = call(gateway, api_key, "DELETE", f"/v1/conversations/{conversation.id}/items/msg_0")
    assert response.status_code == 405  # stored history is append-only: delete the conversation
    response = call(gateway, api_key, "GET", f"/v1/conversations/{conversation.id}/items/msg_0/more")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert upstream_requests(upstream, api_key) == []


def test_delete_removes_everything_and_the_next_turn_starts_empty(
    gateway: ServerProcess,
    upstream: ServerProcess,
    api_key: str,
    client: OpenAI,
    conversation_id: str,
    database_url: str,
) -> None:
    client.conversations.create(
        extra_body={"id": conversation_id, "max_history_messages": 0, "metadata": {"a": "b"}}
    )
    client.chat.completions.create(
        model=MODEL,
        extra_headers={"X-Conversation-Id": conversation_id},
        messages=[{"role": "system", "content": "Secret prompt."}, {"role": "user", "content": "secret one"}],
    )
    chat(client, conversation_id, "secret two")
    client.conversations.delete(conversation_id)
    attempts = read_database(
        database_url, select(ATTEMPTS).where(ATTEMPTS.c.conversation_id == conversation_id)
    )
    assert len(attempts) == 2
    for attempt in attempts:  # the request log keeps usage, loses content
        assert attempt.prompt_tokens > 0 and attempt.completion_tokens > 0 and attempt.status == 200
        assert attempt.response_body is None and attempt.fingerprint is None and attempt.error is None
    # the next turn starts empty: no history, no system prompt, default settings, no metadata
    assert chat(client, conversation_id, "fresh") == "[1 messages] fresh"
    assert upstream_requests(upstream, api_key)[-1]["body"]["messages"] == [
        {"role": "user", "content": "fresh"}
    ]
    info = client.conversations.retrieve(conversation_id)
    extra = info.model_extra or {}
    assert info.metadata == {} and extra["system_prompt"] is None and extra["message_count"] == 2
    assert extra["settings"]["max_history_messages"] is None
    assert read_database(database_url, ORPHAN_MESSAGES) == [(0,)]


async def test_delete_waits_for_a_turn_in_flight(
    gateway: ServerProcess, api_key: str, conversation_id: str, database_url: str
) -> None:
    async with AsyncOpenAI(
        base_url=gateway.url + "/v1", api_key=api_key, default_headers={"X-Conversation-Id": conversation_id}
    ) as sdk:
        await sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "first"}])

        # The headers of a streamed turn come once the gateway holds the conversation; the mock then
        # waits 1 s before its first chunk, so the delete arrives while the turn is in flight.
        stream = await sdk.chat.completions.create(
            model=MODEL, stream=True, messages=[{"role": "user", "content": "FAULT:slow:1000 second"}]
        )
        deleting = asyncio.create_task(sdk.conversations.delete(conversation_id))
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text.startswith("[3 messages]")
        assert (await deleting).deleted is True
        # Had the delete not waited for the turn, the turn would have stored into a new conversation.
        with pytest.raises(openai.NotFoundError):
            await sdk.conversations.retrieve(conversation_id)
    assert await asyncio.to_thread(read_database, database_url, ORPHAN_MESSAGES) == [(0,)]


def cli(database_url: str, *args: str, stdin: str = "") -> Result:
    """Run `gateway conversations ...` against the database (in process: the server is the real one)."""
    return CliRunner().invoke(main, ["conversations", *args, "--database-url", database_url], input=stdin)


def system_turn(gateway: ServerProcess, api_key: str, conversation_id: str, text: str) -> None:
    """One stateful turn as this caller."""
    headers = {"X-Conversation-Id": conversation_id}
    with OpenAI(base_url=gateway.url + "/v1", api_key=api_key, default_headers=headers) as sdk:
        sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
        )


def test_cli_lists_shows_and_deletes_across_callers(gateway: ServerProcess, database_url: str) -> None:
    alice, bob = f"sk-alice-{secrets.token_hex(4)}", f"sk-bob-{secrets.token_hex(4)}"
    shared = f"shared-{secrets.token_hex(4)}"
    system_turn(gateway, alice, shared, "from alice")
    system_turn(gateway, bob, shared, "from bob")
    system_turn(gateway, bob, shared + "-b", "bob again")
    alice_id, bob_id = caller_identity(alice), caller_identity(bob)

    listed = cli(database_url, "list", "--limit", "1000")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines()[0].split()[:4] == ["ID", "OWNER", "MESSAGES", "TOKENS"]
    assert (
        listed.stdout.count(shared) == 3 and alice_id[:12] in listed.stdout and bob_id[:12] in listed.stdout
    )

    as_json = cli(database_url, "list", "--json", "--owner", bob_id[:10])
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["id"] for r in rows] == [shared + "-b", shared]  # newest activity first
    assert {r["owner"] for r in rows} == {bob_id} and rows[0]["message_count"] == 2
    assert rows[0]["system_prompt"] == "Be brief."

    shown = cli(database_url, "show", shared)
    assert shown.exit_code == 0, shown.output
    views = json.loads("[" + shown.stdout.replace("}\n{", "},\n{") + "]")
    assert {v["owner"] for v in views} == {alice_id, bob_id}  # ambiguous across callers: every match
    assert {v["messages"][0]["content"] for v in views} == {"from alice", "from bob"}

    ambiguous = cli(database_url, "delete", shared, "--yes")
    assert ambiguous.exit_code == 1 and "--owner" in ambiguous.output
    deleted = cli(database_url, "delete", shared, "--owner", alice_id)  # no terminal: no question asked
    assert deleted.exit_code == 0, deleted.output
    headers = {"Authorization": f"Bearer {alice}"}
    assert httpx.get(f"{gateway.url}/v1/conversations/{shared}", headers=headers).status_code == 404
    headers = {"Authorization": f"Bearer {bob}"}
    assert httpx.get(f"{gateway.url}/v1/conversations/{shared}", headers=headers).status_code == 200

    missing = cli(database_url, "show", "no-such-conversation")
    assert missing.exit_code == 1 and "No conversation" in missing.output


# ---------------------------------------------------------------- Conversations API


def test_retrieve_has_the_issue_fields(sliding: ServerProcess, api_key: str, conversation_id: str) -> None:
    """GET /v1/conversations/{id}: the exact field names and types, Unix-second timestamps."""
    turn(sliding, api_key, conversation_id, "hello")
    body = httpx.get(f"{sliding.url}/v1/conversations/{conversation_id}", headers=auth(api_key)).json()
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


def test_sdk_create_without_id_and_the_full_lifecycle(sliding: ServerProcess, api_key: str) -> None:
    """create (conv_ id), retrieve, update(metadata=...), items.list, delete with the official SDK."""
    with sdk(sliding, api_key, max_retries=0) as client:
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


def test_sdk_update_on_an_unknown_id_is_404_and_creates_nothing(sliding: ServerProcess, api_key: str) -> None:
    """'On an unknown id -> 404 (update does not create).'"""
    missing = f"conv_missing{secrets.token_hex(4)}"
    with sdk(sliding, api_key, max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as error:
            client.conversations.update(missing, metadata={"x": "y"})
        assert error.value.status_code == 404
        with pytest.raises(openai.NotFoundError):
            client.conversations.retrieve(missing)
        with pytest.raises(openai.NotFoundError):
            client.conversations.delete(missing)


def test_null_clears_every_setting(
    sliding: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """'null clears a setting', via the SDK's POST update and via PATCH."""
    url = f"{sliding.url}/v1/conversations/{conversation_id}"
    fields = {"metadata": {"k": "v"}, "system_prompt": "Be terse.", "max_history_messages": 0}
    assert httpx.post(
        f"{sliding.url}/v1/conversations",
        json={"id": conversation_id, **fields},
        headers=auth(api_key),
    ).is_success
    turn(sliding, api_key, conversation_id, "one")
    assert sent_messages(upstream, api_key)[0] == {"role": "system", "content": "Be terse."}
    with sdk(sliding, api_key, max_retries=0) as client:
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
    _, headers = turn(sliding, api_key, conversation_id, "two")
    assert history(headers) == (2, 0)
    assert [m["role"] for m in sent_messages(upstream, api_key)] == ["user", "assistant", "user"]


def test_list_pages_with_has_more_and_after(sliding: ServerProcess, upstream: ServerProcess) -> None:
    """'{"object": "list", "data", "has_more"}', newest activity first, has_more false at the end."""
    api_key = f"sk-list-{secrets.token_hex(6)}"
    ids = [f"conv-l{i}-{secrets.token_hex(3)}" for i in range(3)]
    for conversation_id in ids:
        turn(sliding, api_key, conversation_id, "hi")
    turn(sliding, api_key, ids[0], "again")  # ids[0] now has the newest activity
    seen, after = [], None
    while True:
        params = {"limit": "2"} | ({"after": after} if after else {})
        page = httpx.get(f"{sliding.url}/v1/conversations", params=params, headers=auth(api_key)).json()
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
    sliding: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """'the next turn with that id starts empty, with no system prompt and default settings'."""
    fields = {
        "id": conversation_id,
        "system_prompt": "Old.",
        "max_history_messages": 0,
        "metadata": {"a": "b"},
    }
    assert httpx.post(f"{sliding.url}/v1/conversations", json=fields, headers=auth(api_key)).is_success
    turn(sliding, api_key, conversation_id, "one")
    response = httpx.delete(f"{sliding.url}/v1/conversations/{conversation_id}", headers=auth(api_key))
    assert response.json() == {"id": conversation_id, "object": "conversation.deleted", "deleted": True}
    _, headers = turn(sliding, api_key, conversation_id, "fresh")
    assert history(headers) == (0, 0)
    assert sent_messages(upstream, api_key) == [{"role": "user", "content": "fresh"}]
    _, headers = turn(sliding, api_key, conversation_id, "second")
    assert history(headers) == (2, 0)  # the old max_history_messages 0 is gone
    body = httpx.get(f"{sliding.url}/v1/conversations/{conversation_id}", headers=auth(api_key)).json()
    assert body["system_prompt"] is None and not body["metadata"] and body["message_count"] == 4
    assert body["settings"]["max_history_messages"] is None


def test_another_callers_conversation_is_404_everywhere(
    sliding: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """'Unknown id or another caller's id -> 404, OpenAI-shaped.'"""
    turn(sliding, api_key, conversation_id, "mine")
    other = auth("sk-other-" + secrets.token_hex(6))
    base = f"{sliding.url}/v1/conversations/{conversation_id}"
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
    listed = httpx.get(f"{sliding.url}/v1/conversations", headers=other).json()["data"]
    assert conversation_id not in [item["id"] for item in listed]


def test_items_list_sdk_shapes_with_a_system_prompt_and_tools(
    sliding: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """items: message items with input_text/output_text parts, function_call and function_call_output."""
    tools: list[Any] = [
        {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    ]
    with sdk(sliding, api_key, conversation_id, max_retries=0) as client:
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


def test_a_full_last_page_has_no_more(sliding: ServerProcess) -> None:
    """'has_more is false on the last page', also when the last page is exactly full."""
    api_key = f"sk-full-{secrets.token_hex(6)}"
    for i in range(2):
        turn(sliding, api_key, f"conv-f{i}-{secrets.token_hex(3)}", "hi")
    page = httpx.get(f"{sliding.url}/v1/conversations", params={"limit": "2"}, headers=auth(api_key)).json()
    assert len(page["data"]) == 2 and page["has_more"] is False
    empty = httpx.get(
        f"{sliding.url}/v1/conversations", headers=auth(f"sk-none-{secrets.token_hex(4)}")
    ).json()
    assert empty["object"] == "list" and empty["data"] == [] and empty["has_more"] is False


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "1.5"])
def test_bad_list_limits_are_400(sliding: ServerProcess, api_key: str, limit: str) -> None:
    """A limit that is not a positive whole number is a 400, OpenAI-shaped, never a 500."""
    response = httpx.get(f"{sliding.url}/v1/conversations", params={"limit": limit}, headers=auth(api_key))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "limit"


def test_sdk_items_list_pages_through_everything(
    sliding: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """The SDK's items.list auto-pagination (limit, after, has_more/last_id) returns every stored message."""
    for text in ("one", "two", "three"):
        turn(sliding, api_key, conversation_id, text)
    with sdk(sliding, api_key, max_retries=0) as client:
        ascending = list(client.conversations.items.list(conversation_id, limit=2, order="asc"))
        descending = list(client.conversations.items.list(conversation_id, limit=4, order="desc"))
        first_page = client.conversations.items.list(conversation_id, limit=2, order="asc")
    assert len(ascending) == 6
    assert [item.role for item in ascending] == ["user", "assistant"] * 3  # type: ignore[union-attr]
    assert [item.content[0].text for item in ascending[::2]] == ["one", "two", "three"]  # type: ignore[union-attr,index]
    assert [item.id for item in descending] == [item.id for item in reversed(ascending)]
    assert len({item.id for item in ascending}) == 6
    assert first_page.has_more is True and len(first_page.data) == 2


def test_create_on_an_existing_id_never_overwrites_it(
    sliding: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """Creating with an id that exists is refused (4xx, OpenAI-shaped) and the stored turn survives."""
    turn(sliding, api_key, conversation_id, "keep me")
    response = httpx.post(
        f"{sliding.url}/v1/conversations",
        json={"id": conversation_id, "system_prompt": "New."},
        headers=auth(api_key),
    )
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()["error"]) >= {"message", "type", "param", "code"}
    body = httpx.get(f"{sliding.url}/v1/conversations/{conversation_id}", headers=auth(api_key)).json()
    assert body["message_count"] == 2 and body["system_prompt"] is None
    # The same id under another caller is a different conversation: creating it works.
    other = httpx.post(f"{sliding.url}/v1/conversations", json={"id": conversation_id}, headers=auth("sk-x2"))
    assert other.status_code == 200, other.text
    assert other.json()["message_count"] == 0


@pytest.mark.parametrize("body", ["[]", '"text"', "null", "{bad json", "1"])
def test_update_bodies_that_are_not_objects_are_400(
    sliding: ServerProcess, api_key: str, conversation_id: str, body: str
) -> None:
    """A PATCH/POST body that is not a JSON object is a 400, not a 500, and changes nothing."""
    turn(sliding, api_key, conversation_id, "x")
    url = f"{sliding.url}/v1/conversations/{conversation_id}"
    for method in ("PATCH", "POST"):
        response = httpx.request(
            method, url, content=body, headers=auth(api_key) | {"Content-Type": "application/json"}
        )
        assert response.status_code == 400, (method, response.text)
    assert httpx.get(url, headers=auth(api_key)).json()["message_count"] == 2


def test_sdk_objects_carry_usage_and_settings(sliding: ServerProcess, api_key: str) -> None:
    """'The conversation objects of the conversations API include their usage'; settings on create/update."""
    with sdk(sliding, api_key, max_retries=0) as client:
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
