"""The mock's stored objects: files, batches, responses, vector stores and fine-tuning jobs, in memory.

Enough of OpenAI's shapes for the official SDK and the gateway's per-key isolation to be tested: create,
retrieve, list (cursor pages, newest first), delete, a file's content, a batch that completes at once with
an output file, stored responses (streamed too) with `previous_response_id`, vector store files, chat
completions made with `"store": true`.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.mock_upstream.auth import check_auth, read_json
from gateway.mock_upstream.errors import MockAPIError, json_response

KINDS = {
    "files": ("file", "file-"),
    "batches": ("batch", "batch_"),
    "responses": ("response", "resp_"),
    "vector_stores": ("vector_store", "vs_"),
    "fine_tuning/jobs": ("fine_tuning.job", "ftjob-"),
    "chat/completions": ("chat.completion", "chatcmpl-"),
}


def _store(request: Request) -> dict[str, dict[str, dict[str, Any]]]:
    store: dict[str, dict[str, dict[str, Any]]] = request.app.state.mock_objects
    return store


def new_object_store() -> dict[str, dict[str, dict[str, Any]]]:
    """An empty store: collection -> id -> object (insertion order is creation order)."""
    return {collection: {} for collection in (*KINDS, "contents", "vector_store_files")}


def _missing(collection: str, object_id: str) -> MockAPIError:
    name = KINDS[collection][0].replace("_", " ").title().replace(" ", "")
    return MockAPIError(404, f"No such {name} object: {object_id}", param="id")


def _new(request: Request, collection: str, fields: dict[str, Any]) -> dict[str, Any]:
    kind, prefix = KINDS[collection]
    obj = {"id": prefix + secrets.token_hex(12), "object": kind, "created_at": int(time.time()), **fields}
    _store(request)[collection][obj["id"]] = obj
    return obj


def _get(request: Request, collection: str, object_id: str) -> dict[str, Any]:
    found = _store(request)[collection].get(object_id)
    if found is None:
        raise _missing(collection, object_id)
    return found


def _page(request: Request, items: list[dict[str, Any]], *, cursor_ids: bool = True) -> Response:
    """OpenAI's cursor page: newest first, `after` an id, `limit` (default 20)."""
    items = list(reversed(items))
    after = request.query_params.get("after")
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    try:
        limit = int(request.query_params.get("limit", "20"))
    except ValueError:
        raise MockAPIError(400, "Invalid 'limit': expected an integer.", param="limit") from None
    page = items[: max(1, min(limit, 10000))]
    body: dict[str, Any] = {"object": "list", "data": page, "has_more": len(items) > len(page)}
    if cursor_ids:
        body["first_id"] = page[0]["id"] if page else None
        body["last_id"] = page[-1]["id"] if page else None
    return json_response(body)


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """name -> (filename, bytes) of a multipart/form-data body."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            fields[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields


async def create_file(request: Request) -> Response:
    """`POST /v1/files` (multipart: file, purpose)."""
    check_auth(request)
    fields = _multipart(request.headers.get("content-type", ""), await request.body())
    if "file" not in fields:
        raise MockAPIError(400, "Missing required parameter: 'file'.", param="file")
    purpose = fields.get("purpose", (None, b""))[1].decode("utf-8", "replace")
    if not purpose:
        raise MockAPIError(400, "Missing required parameter: 'purpose'.", param="purpose")
    filename, content = fields["file"]
    return json_response(_file(request, filename or "upload", content, purpose))


def _file(request: Request, filename: str, content: bytes, purpose: str) -> dict[str, Any]:
    obj = _new(request, "files", {"bytes": len(content), "filename": filename, "purpose": purpose})
    obj.update(status="processed", expires_at=None, status_details=None)
    _store(request)["contents"][obj["id"]] = {"bytes": content}
    return obj


async def file_content(request: Request) -> Response:
    """`GET /v1/files/{id}/content`."""
    check_auth(request)
    object_id = request.path_params["object_id"]
    _get(request, "files", object_id)
    return Response(_store(request)["contents"][object_id]["bytes"], media_type="application/octet-stream")


def _body_object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise MockAPIError(400, "The body must be a JSON object.")
    return body


def _required_file(request: Request, body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise MockAPIError(400, f"Missing required parameter: '{name}'.", param=name)
    if value not in _store(request)["files"]:
        raise MockAPIError(400, f"Invalid '{name}': no such file '{value}'.", param=name)
    return value


async def create_batch(request: Request) -> Response:
    """`POST /v1/batches`: completes at once, with an output file of one line per input line."""
    check_auth(request)
    body = _body_object(await read_json(request))
    input_file = _required_file(request, body, "input_file_id")
    lines = _store(request)["contents"][input_file]["bytes"].splitlines()
    output = b"".join(
        b'{"id": "batch_req_%d", "response": {"status_code": 200}}\n' % i for i in range(len(lines))
    )
    out = _file(request, "batch_output.jsonl", output, "batch_output")
    fields = {
        "endpoint": body.get("endpoint"),
        "input_file_id": input_file,
        "completion_window": body.get("completion_window", "24h"),
        "status": "completed",
        "output_file_id": out["id"],
        "error_file_id": None,
        "request_counts": {"total": len(lines), "completed": len(lines), "failed": 0},
        "metadata": body.get("metadata"),
    }
    return json_response(_new(request, "batches", fields))


async def cancel_batch(request: Request) -> Response:
    """`POST /v1/batches/{id}/cancel`: a completed batch stays completed."""
    check_auth(request)
    return json_response(_get(request, "batches", request.path_params["object_id"]))


def _response_object(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    previous = body.get("previous_response_id")
    if previous is not None:
        _get(request, "responses", str(previous))
    text = body.get("input") if isinstance(body.get("input"), str) else json.dumps(body.get("input"))
    message = {
        "type": "message",
        "id": "msg_" + secrets.token_hex(12),
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": f"echo: {text}", "annotations": []}],
    }
    fields = {
        "status": "completed",
        "model": body.get("model"),
        "output": [message],
        "previous_response_id": previous,
        "usage": {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8},
        "input": body.get("input"),
    }
    obj = _new(request, "responses", fields)
    if body.get("store") is False:
        del _store(request)["responses"][obj["id"]]
    return {k: v for k, v in obj.items() if k != "input"}


async def create_response(request: Request) -> Response:
    """`POST /v1/responses`, streamed (response.created ... response.completed) or not."""
    check_auth(request)
    body = _body_object(await read_json(request))
    if not isinstance(body.get("model"), str):
        raise MockAPIError(400, "Missing required parameter: 'model'.", param="model")
    obj = _response_object(request, body)
    if body.get("stream") is not True:
        return json_response(obj)

    async def events() -> AsyncIterator[bytes]:
        created = {**obj, "status": "in_progress", "output": []}
        text = obj["output"][0]["content"][0]["text"]
        for number, (kind, data) in enumerate(
            [
                ("response.created", {"response": created}),
                ("response.output_text.delta", {"item_id": obj["output"][0]["id"], "delta": text}),
                ("response.completed", {"response": obj}),
            ]
        ):
            payload = json.dumps({"type": kind, "sequence_number": number, **data})
            yield f"event: {kind}\ndata: {payload}\n\n".encode()

    return StreamingResponse(events(), media_type="text/event-stream")


async def input_items(request: Request) -> Response:
    """`GET /v1/responses/{id}/input_items`."""
    check_auth(request)
    stored = _get(request, "responses", request.path_params["object_id"])
    text = stored.get("input")
    item = {
        "id": "msg_in",
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }
    return _page(request, [item])


async def create_vector_store(request: Request) -> Response:
    """`POST /v1/vector_stores` (optional `file_ids`)."""
    check_auth(request)
    body = _body_object(await read_json(request))
    obj = _new(request, "vector_stores", {"name": body.get("name"), "status": "completed", "usage_bytes": 0})
    for file_id in body.get("file_ids") or []:
        _attach(request, obj["id"], str(file_id))
    return json_response(obj)


def _attach(request: Request, store_id: str, file_id: str) -> dict[str, Any]:
    _get(request, "files", file_id)
    item = {"id": file_id, "object": "vector_store.file", "vector_store_id": store_id, "status": "completed"}
    _store(request)["vector_store_files"][f"{store_id}/{file_id}"] = item
    return item


async def vector_store_files(request: Request) -> Response:
    """`GET` (list) or `POST` (attach `file_id`) `/v1/vector_stores/{id}/files`."""
    check_auth(request)
    store_id = request.path_params["object_id"]
    _get(request, "vector_stores", store_id)
    if request.method == "POST":
        body = _body_object(await read_json(request))
        return json_response(_attach(request, store_id, _required_file(request, body, "file_id")))
    items = [v for k, v in _store(request)["vector_store_files"].items() if k.startswith(store_id + "/")]
    return _page(request, items)


async def create_job(request: Request) -> Response:
    """`POST /v1/fine_tuning/jobs`: queued, never runs."""
    check_auth(request)
    body = _body_object(await read_json(request))
    training = _required_file(request, body, "training_file")
    fields: dict[str, Any] = {
        "model": body.get("model"),
        "training_file": training,
        "status": "queued",
        "result_files": [],
    }
    return json_response(_new(request, "fine_tuning/jobs", fields))


def store_completion(request: Request, completion: dict[str, Any], body: dict[str, Any]) -> None:
    """Keep a chat completion made with `"store": true` (with its request's messages and metadata)."""
    stored = {**completion, "metadata": body.get("metadata") or {}, "request_messages": body.get("messages")}
    _store(request)["chat/completions"][completion["id"]] = stored


async def completion_messages(request: Request) -> Response:
    """`GET /v1/chat/completions/{id}/messages`: the stored completion's request messages."""
    check_auth(request)
    stored = _get(request, "chat/completions", request.path_params["object_id"])
    messages = [
        {"id": f"{stored['id']}-{n}", **message} for n, message in enumerate(stored["request_messages"] or [])
    ]
    return _page(request, messages)


def _public(found: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in found.items() if k not in ("input", "request_messages")}


def _collection_routes(collection: str) -> list[Route]:
    async def listing(request: Request) -> Response:
        check_auth(request)
        items = [_public(item) for item in _store(request)[collection].values()]
        return _page(request, items, cursor_ids=collection != "fine_tuning/jobs")

    async def one(request: Request) -> Response:
        check_auth(request)
        object_id = request.path_params["object_id"]
        found = _get(request, collection, object_id)
        if request.method == "DELETE":
            del _store(request)[collection][object_id]
            kind = "chat.completion.deleted" if collection == "chat/completions" else found["object"]
            return json_response({"id": object_id, "object": kind, "deleted": True})
        return json_response(_public(found))

    base = f"/v1/{collection}"
    return [
        Route(base, listing, methods=["GET"]),
        Route(base + "/{object_id}", one, methods=["GET", "DELETE"]),
    ]


def object_routes() -> list[Route]:
    """The mock's routes for stored objects."""
    return [
        Route("/v1/files", create_file, methods=["POST"]),
        Route("/v1/files/{object_id}/content", file_content, methods=["GET"]),
        Route("/v1/batches", create_batch, methods=["POST"]),
        Route("/v1/batches/{object_id}/cancel", cancel_batch, methods=["POST"]),
        Route("/v1/responses", create_response, methods=["POST"]),
        Route("/v1/responses/{object_id}/input_items", input_items, methods=["GET"]),
        Route("/v1/vector_stores", create_vector_store, methods=["POST"]),
        Route("/v1/vector_stores/{object_id}/files", vector_store_files, methods=["GET", "POST"]),
        Route("/v1/fine_tuning/jobs", create_job, methods=["POST"]),
        Route("/v1/chat/completions/{object_id}/messages", completion_messages, methods=["GET"]),
        *(route for collection in KINDS for route in _collection_routes(collection)),
    ]
