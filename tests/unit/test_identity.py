"""Unit tests of caller identity, conversation-id validation and request checks."""

from __future__ import annotations

import hashlib

import pytest

from gateway.chat_request import check_chat_body, parse_json_object, parse_limit_header
from gateway.errors import InvalidConversationId, InvalidRequest
from gateway.identity import bearer_token, caller_identity, validate_conversation_id


@pytest.mark.parametrize("value", ["a", "support-42", "A.b_c:d-e", "x" * 128])
def test_valid_conversation_ids(value: str) -> None:
    assert validate_conversation_id(value) == value


@pytest.mark.parametrize("value", ["", " ", "x" * 129, "a b", "a/b", "é", "a\nb", "a\r\nX-Injected: 1"])
def test_invalid_conversation_ids(value: str) -> None:
    with pytest.raises(InvalidConversationId) as caught:
        validate_conversation_id(value)
    assert caught.value.to_body()["error"]["code"] == "invalid_conversation_id"  # type: ignore[index]


def test_identity_is_sha256_of_the_bearer_token() -> None:
    assert bearer_token("Bearer sk-abc") == "sk-abc"
    assert bearer_token("bearer   sk-abc ") == "sk-abc"
    assert bearer_token("Basic xyz") == "" and bearer_token(None) == ""
    assert caller_identity("sk-abc") == hashlib.sha256(b"sk-abc").hexdigest()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "messages"),
        ({"messages": {}}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [1]}, "messages[0]"),
        ({"messages": [{"content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
        ({"messages": [{"role": "user", "content": "x"}], "model": 4}, "model"),
    ],
)
def test_chat_body_errors_name_the_field(body: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_chat_body(body)
    assert caught.value.param == param


def test_parse_json_object_and_limit_headers() -> None:
    assert parse_json_object(b'{"a": 1}') == {"a": 1}
    for raw in (b"[1]", b"{", b"\xff"):
        with pytest.raises(InvalidRequest):
            parse_json_object(raw)
    assert parse_limit_header("X", None) is None and parse_limit_header("X", " 5 ") == 5
    for bad in ("-1", "x", "1.5", "", "9999999999"):
        with pytest.raises(InvalidRequest):
            parse_limit_header("X", bad)


@pytest.mark.parametrize(
    ("raw", "ok"),
    [
        (b'{"t": "plain"}', True),
        (b'{"t": "emoji \\ud83d\\ude00 as a pair"}', True),
        (b'{"t": "escaped backslash \\\\ud800 is text"}', True),
        (b'{"t": "lone \\ud800"}', False),
        (b'{"t": "lone low \\uDFFF"}', False),
    ],
)
def test_lone_surrogates_are_invalid_json(raw: bytes, ok: bool) -> None:
    if ok:
        parse_json_object(raw)
    else:
        with pytest.raises(InvalidRequest) as caught:
            parse_json_object(raw)
        assert caught.value.code == "invalid_json"
