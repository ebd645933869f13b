"""The bounded copy of pass-through JSON bodies that reads their model and usage."""

from __future__ import annotations

import gzip
import json
import zlib

from gateway.capture import BodyCapture

USAGE = {"prompt_tokens": 8, "total_tokens": 8}


def embeddings(count: int, width: int = 8) -> bytes:
    """An OpenAI-shaped embeddings body: `model` and `usage` come after `data`."""
    data = [{"object": "embedding", "index": i, "embedding": [0.123456] * width} for i in range(count)]
    body = {"object": "list", "data": data, "model": "text-embedding-3-small", "usage": USAGE}
    return json.dumps(body).encode()


def captured(body: bytes, chunk: int = 1000, **kwargs: object) -> dict[str, object]:
    capture = BodyCapture(**kwargs)  # type: ignore[arg-type]
    for start in range(0, len(body), chunk):
        capture.feed(body[start : start + chunk])
    return capture.fields("model", "usage")


def test_small_body_is_parsed_whole() -> None:
    assert captured(embeddings(2)) == {"model": "text-embedding-3-small", "usage": USAGE}


def test_body_over_the_limit_is_read_from_its_tail() -> None:
    body = embeddings(200, width=64)
    assert len(body) > 50_000
    assert captured(body, chunk=777, limit=10_000) == {"model": "text-embedding-3-small", "usage": USAGE}
    # One chunk that crosses the limit, and a tiny last chunk.
    capture = BodyCapture(limit=10_000)
    capture.feed(body[:9_000])
    capture.feed(body[9_000:-3])
    capture.feed(body[-3:])
    assert capture.fields("usage") == {"usage": USAGE}


def test_gzip_and_deflate_bodies_are_decoded() -> None:
    body = embeddings(50, width=64)
    assert captured(gzip.compress(body), encoding="gzip")["usage"] == USAGE
    assert captured(gzip.compress(body), encoding="gzip", limit=5_000)["usage"] == USAGE
    assert captured(zlib.compress(body), encoding="deflate")["model"] == "text-embedding-3-small"


def test_a_compression_bomb_is_decoded_in_steps() -> None:
    body = b'{"data": "' + b"x" * 20_000_000 + b'", "usage": {"prompt_tokens": 3}}'
    packed = gzip.compress(body)
    assert len(packed) < 100_000
    assert captured(packed, chunk=len(packed), encoding="gzip")["usage"] == {"prompt_tokens": 3}


def test_unreadable_bodies_give_nothing() -> None:
    empty = {"model": None, "usage": None}
    assert captured(b"not json") == empty
    assert captured(b"[1, 2]") == empty
    assert captured(b"") == empty
    assert captured(b"\x1f\x8b garbage", encoding="gzip") == empty
    # A key inside a string value is escaped, so the tail scan never takes it for a key.
    tricky = json.dumps({"data": "x" * 5000 + '"usage": {"prompt_tokens": 99}', "model": "m"}).encode()
    assert captured(tricky, limit=1000) == {"model": "m", "usage": None}


def test_for_headers_only_takes_json_in_readable_encodings() -> None:
    assert BodyCapture.for_headers({"content-type": "application/json"}) is not None
    assert BodyCapture.for_headers({"content-type": "application/json; charset=utf-8"}) is not None
    assert (
        BodyCapture.for_headers({"content-type": "application/json", "content-encoding": "gzip"}) is not None
    )
    assert BodyCapture.for_headers({"content-type": "text/event-stream"}) is None
    assert BodyCapture.for_headers({"content-type": "multipart/form-data; boundary=x"}) is None
    assert BodyCapture.for_headers({}) is None
    assert BodyCapture.for_headers({"content-type": "application/json", "content-encoding": "br"}) is None
