"""Unit tests of key rules, request-body checks for hostile input, header filtering and log redaction."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.auth import same_secret
from gateway.chat_request import check_chat_body, check_idempotency_key, parse_json_object
from gateway.config import Settings
from gateway.errors import InvalidRequest
from gateway.identity import caller_identity
from gateway.keys import KeyInfo, new_secret, validate_key_name
from gateway.redaction import BEARER, KEY_SHAPED, FieldRedactor, Redactor, protect_logs
from gateway.upstream import connection_nominated
from gateway.views import key_object, render_json

USER = [{"role": "user", "content": "hi"}]


def test_secrets_are_random_prefixed_and_hash_to_the_identity() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("gw-") and len(first) == 46 and first != second
    info = KeyInfo("bot", caller_identity(first), None, 1.5, None)
    assert key_object(info)["identity"] == caller_identity(first)
    assert "secret" not in key_object(info) and key_object(info, first)["secret"] == first


@pytest.mark.parametrize("name", ["a", "bot-1", "team.alpha:prod_2", "x" * 64])
def test_valid_key_names(name: str) -> None:
    assert validate_key_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 65, "a b", "a/b", "é", 7, None, "a\nb"])
def test_invalid_key_names(name: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_key_name(name)
    assert caught.value.param == "name"


def test_constant_time_comparison_accepts_any_text() -> None:
    assert same_secret("gw-abc", "gw-abc") and not same_secret("gw-abd", "gw-abc")
    assert not same_secret("é\u20ac\ud800", "gw-abc")  # non-ASCII (even a lone surrogate) is no crash


@pytest.mark.parametrize(
    "raw",
    [
        b"NaN",
        b'{"a": NaN}',
        b'{"a": -Infinity}',
        b"[" * 100_000,
        b'{"a": "\\ud800"}',
        b'{"\\udfff": 1}',
        b"\xff",
    ],
)
def test_bodies_that_are_not_valid_json_are_rejected(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_json_object(raw)
    assert caught.value.code == "invalid_json"


def test_valid_surrogate_pairs_and_escaped_backslashes_are_accepted() -> None:
    body = parse_json_object(b'{"a": "\\ud83d\\ude00", "b": "\\\\ud800"}')
    assert body == {"a": "\U0001f600", "b": "\\ud800"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": 5, "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [5]}]}, "messages[0].content[0]"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
            "messages[0].content[0].text",
        ),
        ({"messages": [{"role": "assistant", "tool_calls": {}}]}, "messages[0].tool_calls"),
        ({"messages": [{"role": "assistant", "tool_calls": [1]}]}, "messages[0].tool_calls[0]"),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"function": "f"}]}]},
            "messages[0].tool_calls[0].function",
        ),
        ({"messages": [{"role": "tool", "content": "x", "tool_call_id": 1}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "user", "content": "x", "name": []}]}, "messages[0].name"),
        ({"messages": USER, "stream": "yes"}, "stream"),
        ({"messages": USER, "stream_options": []}, "stream_options"),
        ({"messages": USER, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
        ({"messages": USER, "tools": {}}, "tools"),
        ({"messages": USER, "tools": ["f"]}, "tools[0]"),
        ({"messages": USER, "model": 4}, "model"),
        ({"messages": USER, "model": "m" * 201}, "model"),
        ({"messages": USER, "model": "gpt\x00"}, "model"),
    ],
)
def test_wrong_types_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_chat_body(body)
    assert caught.value.param == param


def test_fields_the_gateway_does_not_read_pass() -> None:
    body = {
        "messages": USER,
        "temperature": "hot",
        "n": [],
        "tool_choice": 5,
        "metadata": None,
        "x": {"y": 1},
    }
    assert check_chat_body(body) == USER


@pytest.mark.parametrize("value", ["", "k" * 257, "caf\u00e9", "a\tb"])
def test_invalid_idempotency_keys(value: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_idempotency_key(value)
    assert caught.value.param == "Idempotency-Key"


def test_connection_nominated_headers() -> None:
    assert connection_nominated({"connection": "close, X-Secret , keep-alive"}) == {
        "close",
        "x-secret",
        "keep-alive",
    }
    assert connection_nominated({}) == frozenset()


def test_redactor_hides_tokens_keys_and_configured_secrets() -> None:
    redact = Redactor(["upstream-key-123", None])
    text = redact(
        "Authorization: Bearer abc.def headers={'authorization': 'bearer sk-live-123456789'} "
        "key gw-AbCdEf123456_- and upstream-key-123"
    )
    assert "abc.def" not in text and "sk-live-123456789" not in text and "gw-AbCdEf123456" not in text
    assert "upstream-key-123" not in text and text.count("[redacted]") == 4


# Pieces of both patterns in several cases, near misses, separators, and characters that a case-blind match
# folds specially (long s, Kelvin sign, dotted and dotless i): texts made of them hit every edge.
REDACTION_PIECES = [
    "bearer", "Bearer", "BEARER", "bEaReR", "beare", "earer", "sk", "gw", "sk-", "gw-", "SK-", "Gw-",
    "\u017fk-", "s\u212a-", "-", "_", " ", "\t", "\n", ",", "'", "abcdefgh", "x", "1", "\u0130", "\u0131",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(REDACTION_PIECES), max_size=12).map("".join))
def test_the_redactor_changes_a_text_exactly_as_its_two_patterns_would(text: str) -> None:
    """The cheap pre-check that clears most texts never skips one that BEARER or KEY_SHAPED would change."""
    expected = KEY_SHAPED.sub(
        lambda m: f"{m.group(1)}-[redacted]", BEARER.sub(lambda m: m.group(1) + "[redacted]", text)
    )
    assert Redactor()(text) == expected


def test_protect_logs_redacts_every_record(caplog: pytest.LogCaptureFixture) -> None:
    previous = logging.getLogRecordFactory()
    try:
        protect_logs(Settings(admin_key="admin-xyz"))
        protect_logs(Settings(admin_key="admin-xyz"))  # idempotent
        assert logging.getLogger("aiosqlite").getEffectiveLevel() >= logging.WARNING
        with caplog.at_level(logging.INFO, logger="gateway.test"):
            logging.getLogger("gateway.test").info("token %s and %s", "Bearer sk-abcdefghijk", "admin-xyz")
            try:
                raise ValueError("gw-secretsecret leaked")
            except ValueError:
                logging.getLogger("gateway.test").exception("failed")
        text = caplog.text
        assert "sk-abcdefghijk" not in text and "admin-xyz" not in text and "gw-secretsecret" not in text
        assert "[redacted]" in text and "ValueError" in text
    finally:
        logging.setLogRecordFactory(previous)
        for handler in logging.getLogger().handlers:
            for added in [f for f in handler.filters if isinstance(f, FieldRedactor)]:
                handler.removeFilter(added)
        for name in ("sqlalchemy", "aiosqlite", "asyncpg", "httpcore", "aiohttp", "hpack", "multipart"):
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_structured_fields_are_redacted_by_the_handler_filter() -> None:
    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, "request", None, None)
    record.fields = {"path": "/v1/x/sk-abcdefghijk", "status": 200, "conversation_id": "Bearer gw-abcdefghij"}
    assert FieldRedactor(Redactor()).filter(record)
    assert record.fields == {
        "path": "/v1/x/sk-[redacted]",
        "status": 200,
        "conversation_id": "Bearer [redacted]",
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"path": "/v1/chat/completions", "status": 200, "conversation_id": "support-42", "none": None},
        {"method": "POST", "path": "/v1/x/upstream-key-123"},  # a configured secret
        {"a": "upstream-key", "b": "-123"},  # a secret across two fields: each alone holds none of it
        {"a": "BEARER", "b": "abc"},  # the literal a pattern needs, nothing to redact
        {"a": "ok", "b": "gw-abcdefghij"},
    ],
)
def test_field_redaction_changes_a_record_exactly_as_field_by_field_redaction(fields: dict[str, Any]) -> None:
    redact = Redactor(["upstream-key-123"])
    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, "request", None, None)
    record.fields = dict(fields)
    FieldRedactor(redact).filter(record)
    assert record.fields == {k: redact(v) if isinstance(v, str) else v for k, v in fields.items()}
    if redact.clean("\0".join(v for v in fields.values() if isinstance(v, str))):
        assert record.fields == fields  # a clean record keeps its own fields


def test_json_roundtrip_of_key_object() -> None:
    info = KeyInfo("bot", "f" * 64, 10**12, 1.0, 2.0, 5 * 10**11)
    assert json.loads(render_json(key_object(info))) == {
        "object": "gateway.key",
        "name": "bot",
        "identity": "f" * 64,
        "created_at": 1,
        "revoked_at": 2,
        "budget_usd": 1.0,
        "spent_usd": 0.5,
    }
