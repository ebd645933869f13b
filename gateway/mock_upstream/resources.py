"""The mock's model list and embeddings routes."""

from __future__ import annotations

import base64
import hashlib
import math
import struct

from starlette.requests import Request
from starlette.responses import Response

from gateway.mock_upstream.auth import check_auth, read_json
from gateway.mock_upstream.errors import (
    MockAPIError,
    empty_array,
    invalid_type,
    invalid_value,
    json_response,
    missing,
)

MOCK_MODELS: dict[str, int] = {
    "gpt-4o-mini": 1721172741,
    "gpt-4o": 1715367049,
    "text-embedding-3-small": 1705948997,
}
EMBEDDING_DIMENSIONS = 8


def _model_object(model_id: str) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": MOCK_MODELS[model_id], "owned_by": "mock"}


async def list_models(request: Request) -> Response:
    """`GET /v1/models`: the mock's three models."""
    check_auth(request)
    return json_response({"object": "list", "data": [_model_object(m) for m in MOCK_MODELS]})


async def get_model(request: Request) -> Response:
    """`GET /v1/models/{id}`: one model, or OpenAI's model_not_found 404."""
    check_auth(request)
    model_id = request.path_params["model_id"]
    if model_id not in MOCK_MODELS:
        message = f"The model '{model_id}' does not exist"
        raise MockAPIError(404, message, param="model", code="model_not_found")
    return json_response(_model_object(model_id))


def mock_embedding(text: str) -> list[float]:
    """Return the deterministic unit-length 8-dim embedding of `text` (from its sha256)."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [
        int.from_bytes(digest[4 * i : 4 * i + 4], "big") / 2**31 - 1.0 for i in range(EMBEDDING_DIMENSIONS)
    ]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [round(v / norm, 6) for v in raw]


def _embedding_inputs(body: object) -> tuple[str, list[str], str]:
    """Validate an embeddings body; return (model, inputs, encoding_format)."""
    if not isinstance(body, dict):
        raise invalid_type("body", "an object", body)
    model = body.get("model")
    if model is None:
        raise missing("model")
    if not isinstance(model, str) or not model:
        raise invalid_type("model", "a non-empty string", model)
    inputs = body.get("input")
    if inputs is None:
        raise missing("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not all(isinstance(item, str) for item in inputs):
        raise invalid_type("input", "one of a string or array of strings", inputs)
    if not inputs:
        raise empty_array("input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise invalid_value("encoding_format", encoding, ("float", "base64"))
    return model, inputs, encoding


async def create_embeddings(request: Request) -> Response:
    """`POST /v1/embeddings`: deterministic embeddings in OpenAI's list shape."""
    check_auth(request)
    model, inputs, encoding = _embedding_inputs(await read_json(request))
    data: list[dict[str, object]] = []
    for index, text in enumerate(inputs):
        vector = mock_embedding(text)
        embedding: object = vector
        if encoding == "base64":
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(max(1, len(text) // 4) for text in inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return json_response({"object": "list", "data": data, "model": model, "usage": usage})
