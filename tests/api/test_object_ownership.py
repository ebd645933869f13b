"""Gateway-key mode: upstream objects (files, batches, responses, ...) belong to the key that created them.

The official SDK against the gateway in process, before the mock upstream (which stores objects like
OpenAI does, for one account: the gateway's).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest

from gateway.mock_upstream.app import create_mock_app
from tests.inprocess import Gateway, bearer, running_gateway

ADMIN = "admin-ownership-test"


@dataclass
class Callers:
    """The gateway and two keys' SDK clients."""

    gateway: Gateway
    a: openai.AsyncOpenAI
    b: openai.AsyncOpenAI
    a_key: str
    b_key: str


async def _key(gateway: Gateway, name: str) -> str:
    response = await gateway.client.post("/admin/keys", json={"name": name}, headers=bearer(ADMIN))
    assert response.status_code == 200, response.text
    secret: str = response.json()["secret"]
    return secret


def _sdk(gateway: Gateway, key: str) -> openai.AsyncOpenAI:
    http = openai.DefaultAsyncHttpxClient(transport=httpx2.ASGITransport(app=gateway.app))
    return openai.AsyncOpenAI(base_url="http://gateway.test/v1", api_key=key, http_client=http, max_retries=0)


async def _callers(tmp_path: Path, database_url: str, **settings: Any) -> AsyncIterator[Callers]:
    upstream = httpx.ASGITransport(app=create_mock_app())
    options = {
        "upstream_api_key": "sk-gateway-upstream",
        "admin_key": ADMIN,
        "database_url": database_url,
        "responses_mode": "passthrough",  # stored responses live upstream (GATEWAY_RESPONSES=passthrough)
        **settings,
    }
    async with running_gateway(tmp_path, upstream, **options) as gateway:
        suffix = secrets.token_hex(4)  # the database is shared by the module's tests
        a_key, b_key = await _key(gateway, f"alice-{suffix}"), await _key(gateway, f"bob-{suffix}")
        async with _sdk(gateway, a_key) as a, _sdk(gateway, b_key) as b:
            yield Callers(gateway, a, b, a_key, b_key)


@pytest.fixture
async def callers(tmp_path: Path, database_url: str) -> AsyncIterator[Callers]:
    """Two gateway keys sharing the gateway's upstream account (SQLite, and Postgres when configured)."""
    async for made in _callers(tmp_path, database_url):
        yield made


def _error(exc: openai.APIStatusError, object_id: str) -> dict[str, Any]:
    body = exc.response.json()
    body["error"]["message"] = body["error"]["message"].replace(object_id, "<id>")
    return {"status": exc.status_code, **body}


async def _not_found(call: Any, object_id: str) -> dict[str, Any]:
    with pytest.raises(openai.NotFoundError) as caught:
        await call
    return _error(caught.value, object_id)


async def test_another_keys_file_answers_exactly_like_a_missing_one(callers: Callers) -> None:
    a, b = callers.a, callers.b
    created = await a.files.create(file=("notes.jsonl", b'{"secret": 1}\n'), purpose="batch")
    assert (await a.files.retrieve(created.id)).filename == "notes.jsonl"
    assert (await a.files.content(created.id)).content == b'{"secret": 1}\n'

    missing = await _not_found(b.files.retrieve("file-doesnotexist"), "file-doesnotexist")
    assert await _not_found(b.files.retrieve(created.id), created.id) == missing
    assert await _not_found(b.files.content(created.id), created.id) == missing
    assert await _not_found(b.files.delete(created.id), created.id) == missing
    assert [f.id async for f in b.files.list()] == []
    assert [f.id async for f in a.files.list()] == [created.id]
    assert (await a.files.retrieve(created.id)).id == created.id  # B's attempts changed nothing


async def test_batches_use_only_the_callers_files_and_hand_it_their_output(callers: Callers) -> None:
    a, b = callers.a, callers.b
    source = await a.files.create(file=("in.jsonl", b'{"custom_id": "1"}\n'), purpose="batch")
    with pytest.raises(openai.NotFoundError):
        await b.batches.create(
            input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    batch = await a.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.output_file_id is not None
    assert b"batch_req_0" in (await a.files.content(batch.output_file_id)).content
    await _not_found(b.files.content(batch.output_file_id), batch.output_file_id)
    listed = [x async for x in a.batches.list()]
    assert [x.output_file_id for x in listed] == [batch.output_file_id]
    await _not_found(b.batches.retrieve(batch.id), batch.id)
    await _not_found(b.batches.cancel(batch.id), batch.id)
    assert [x.id async for x in b.batches.list()] == []
    assert [x.id async for x in a.batches.list()] == [batch.id]


async def test_stored_responses_are_the_creators_streamed_or_not(callers: Callers) -> None:
    a, b = callers.a, callers.b
    first = await a.responses.create(model="gpt-4o-mini", input="hello")
    assert (await a.responses.retrieve(first.id)).id == first.id
    await _not_found(b.responses.retrieve(first.id), first.id)
    await _not_found(b.responses.delete(first.id), first.id)
    await _not_found(b.responses.input_items.list(first.id), first.id)
    with pytest.raises(openai.NotFoundError):  # continuing another key's conversation
        await b.responses.create(model="gpt-4o-mini", input="and?", previous_response_id=first.id)
    follow = await a.responses.create(model="gpt-4o-mini", input="and?", previous_response_id=first.id)
    assert follow.previous_response_id == first.id

    stream = await a.responses.create(model="gpt-4o-mini", input="streamed", stream=True)
    streamed_id = None
    async for event in stream:
        if event.type == "response.created":
            streamed_id = event.response.id
    assert streamed_id is not None
    assert (await a.responses.retrieve(streamed_id)).id == streamed_id
    await _not_found(b.responses.retrieve(streamed_id), streamed_id)


async def test_vector_stores_and_fine_tuning_jobs_are_isolated(callers: Callers) -> None:
    a, b = callers.a, callers.b
    mine = await a.files.create(file=("train.jsonl", b"{}\n"), purpose="fine-tune")
    store = await a.vector_stores.create(name="docs", file_ids=[mine.id])
    await _not_found(b.vector_stores.retrieve(store.id), store.id)
    await _not_found(b.vector_stores.files.list(store.id), store.id)
    assert [s.id async for s in b.vector_stores.list()] == []
    theirs = await b.vector_stores.create(name="bob's")
    with pytest.raises(openai.NotFoundError):  # another key's file, named in the body
        await b.vector_stores.files.create(theirs.id, file_id=mine.id)
    with pytest.raises(openai.NotFoundError):
        await b.vector_stores.create(name="steal", file_ids=[mine.id])
    assert [s.id async for s in a.vector_stores.list()] == [store.id]

    with pytest.raises(openai.NotFoundError):
        await b.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=mine.id)
    job = await a.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=mine.id)
    await _not_found(b.fine_tuning.jobs.retrieve(job.id), job.id)
    assert [j.id async for j in b.fine_tuning.jobs.list()] == []
    assert [j.id async for j in a.fine_tuning.jobs.list()] == [job.id]


async def test_a_list_page_of_other_keys_objects_is_refilled_from_the_next_pages(callers: Callers) -> None:
    a, b = callers.a, callers.b
    mine = await a.files.create(file=("old.txt", b"x"), purpose="assistants")
    for n in range(12):  # newer than A's file: the first upstream pages hold only B's files
        await b.files.create(file=(f"b{n}.txt", b"y"), purpose="assistants")
    page = await a.files.list(limit=5)
    assert [f.id for f in page.data] == [mine.id]
    assert len([f async for f in b.files.list(limit=5)]) == 12


async def test_paths_neither_stateless_nor_tracked_are_refused(callers: Callers) -> None:
    client = callers.gateway.client
    for method, path in [
        ("GET", "/v1/evals"),
        ("GET", "/v1/organization/costs"),
        ("POST", "/v1/realtime/client_secrets"),
        ("DELETE", "/v1/models/ft:gpt-4o:acme"),
        ("POST", "/v1/threads/runs"),
    ]:
        response = await client.request(method, path, headers=bearer(callers.a_key))
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"]["code"] == "path_not_allowed"
    assert callers.gateway.sent == []
    embedding = await callers.a.embeddings.create(model="text-embedding-3-small", input="hi")
    assert len(embedding.data) == 1
    assert [m.id async for m in callers.a.models.list()]


async def test_the_operator_can_allow_more_paths(tmp_path: Path, database_url: str) -> None:
    async for made in _callers(tmp_path, database_url, proxy_allow=("evals", "organization/costs")):
        response = await made.gateway.client.get("/v1/evals", headers=bearer(made.a_key))
        assert response.status_code == 404  # forwarded: the mock has no evals
        assert made.gateway.sent[-1].url.path == "/v1/evals"
        response = await made.gateway.client.get("/v1/evalsx", headers=bearer(made.a_key))
        assert response.status_code == 403


async def test_stored_chat_completions_are_the_creators(callers: Callers) -> None:
    a, b, gateway = callers.a, callers.b, callers.gateway
    made = []
    for stream in (False, True):
        messages: Any = [{"role": "user", "content": f"stored {stream}"}]
        if stream:
            chunks = await a.chat.completions.create(
                model="gpt-4o-mini", messages=messages, store=True, stream=True
            )
            ids = {chunk.id async for chunk in chunks}
            assert len(ids) == 1
            made.append(ids.pop())
        else:
            made.append(
                (await a.chat.completions.create(model="gpt-4o-mini", messages=messages, store=True)).id
            )
    for completion_id in made:
        assert (await a.chat.completions.retrieve(completion_id)).id == completion_id
        assert [m.content async for m in a.chat.completions.messages.list(completion_id)]
        before = len(gateway.sent)
        await _not_found(b.chat.completions.retrieve(completion_id), completion_id)
        await _not_found(b.chat.completions.messages.list(completion_id), completion_id)
        await _not_found(b.chat.completions.delete(completion_id), completion_id)
        assert len(gateway.sent) == before  # never asked upstream
    assert sorted([c.id async for c in a.chat.completions.list()]) == sorted(made)
    assert [c.id async for c in b.chat.completions.list()] == []
    assert (await a.chat.completions.delete(made[0])).deleted


async def test_chat_messages_may_name_only_the_callers_files(callers: Callers) -> None:
    mine = await callers.a.files.create(file=("doc.pdf", b"%PDF-1.4"), purpose="user_data")
    part = {"type": "file", "file": {"file_id": mine.id}}
    messages: Any = [{"role": "user", "content": [{"type": "text", "text": "summarize"}, part]}]
    with pytest.raises(openai.NotFoundError) as caught:
        await callers.b.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert caught.value.response.json()["error"]["param"] == "messages[0].content"
    chats = [r for r in callers.gateway.sent if r.url.path == "/v1/chat/completions"]
    assert chats == []  # refused before the upstream call


async def test_the_gateways_responses_api_uses_only_the_callers_files(
    tmp_path: Path, database_url: str
) -> None:
    async for made in _callers(tmp_path, database_url, responses_mode="translate"):
        mine = await made.a.files.create(file=("doc.pdf", b"%PDF-1.4"), purpose="user_data")
        content = [{"type": "input_text", "text": "summarize"}, {"type": "input_file", "file_id": mine.id}]
        with pytest.raises(openai.NotFoundError) as caught:
            await made.b.responses.create(model="gpt-4o-mini", input=[{"role": "user", "content": content}])
        assert caught.value.response.json()["error"]["param"] == "file_id"
        assert [r for r in made.gateway.sent if r.url.path == "/v1/chat/completions"] == []
