"""Token counting: known tiktoken values, the cookbook's message formula, the estimate, robustness."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.tokens import (
    IMAGE_TOKENS_HIGH_DETAIL,
    IMAGE_TOKENS_LOW_DETAIL,
    TOKENIZER_NOTE,
    TOKENS_PER_MESSAGE,
    TOKENS_PER_TOOL_CALL,
    count_message_tokens,
    count_text_tokens,
    encoding_name_for_model,
    needs_loading,
    read_ranks,
)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-4.5-preview", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("o1", "o200k_base"),
        ("o1-mini", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-oss-120b", "o200k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("gpt-35-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("azure/gpt-35-turbo", "cl100k_base"),
        ("claude-3-5-sonnet-latest", None),
        ("llama-3.1-8b-instant", None),
        ("openai/", None),
        ("", None),
        (None, None),
    ],
)
def test_encoding_name_for_model(model: str | None, expected: str | None) -> None:
    assert encoding_name_for_model(model) == expected


@pytest.mark.parametrize(
    ("text", "model", "expected"),
    [
        # Values from OpenAI's cookbook / tiktoken.
        ("hello world", "gpt-4o", 2),  # o200k_base [24912, 2375]
        ("hello world", "gpt-4", 2),  # cl100k_base [15339, 1917]
        ("tiktoken is great!", "gpt-4o", 6),  # [83, 8251, 2488, 382, 2212, 0]
        ("tiktoken is great!", "gpt-3.5-turbo", 6),  # [83, 1609, 5963, 374, 2294, 0]
        ("antidisestablishmentarianism", "gpt-4o", 6),
        ("2 + 2 = 4", "gpt-4", 7),
        ("お誕生日おめでとう", "gpt-4", 9),
        ("お誕生日おめでとう", "gpt-4o", 8),
        ("", "gpt-4o", 0),
    ],
)
def test_known_text_counts(text: str, model: str, expected: int) -> None:
    assert count_text_tokens(text, model) == expected


def test_special_token_text_is_counted_as_plain_text() -> None:
    # A user writing "<|endoftext|>" must not crash the counter (tiktoken's encode() would raise).
    assert count_text_tokens("<|endoftext|>", "gpt-4o") == 7
    assert count_text_tokens("<|endoftext|>", "gpt-4") == 7


def test_lone_surrogate_does_not_raise() -> None:
    assert count_text_tokens("\ud800 broken", "gpt-4o") > 0


def test_estimate_for_unknown_models() -> None:
    assert count_text_tokens("hello world", "llama-3.1-8b-instant") == 3  # ceil(11 / 4)
    assert count_text_tokens("abcd", None) == 1
    assert count_text_tokens("abcde", "mystery") == 2
    assert count_text_tokens("", None) == 0


def test_long_text_beyond_the_tokenizer_call_limits_is_counted_exactly() -> None:
    # bpe_openai refuses 1,000,000 characters or 200,000 tokens in one call; the module splits.
    assert count_text_tokens("word " * 3, "gpt-4o") == 4  # "word", " word" x 2, " "
    assert count_text_tokens("word " * 300_000, "gpt-4o") == 300_001
    assert count_text_tokens("😀" * 300_000, "gpt-4") > 200_000


# OpenAI cookbook, "How to count tokens with tiktoken", section 6: the API reported 129 prompt
# tokens for gpt-3.5-turbo / gpt-4 and 124 for gpt-4o / gpt-4o-mini for these messages.
COOKBOOK_MESSAGES: list[dict[str, object]] = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for "
        "increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]


@pytest.mark.parametrize(
    ("model", "expected"),
    [("gpt-3.5-turbo", 129), ("gpt-4-0613", 129), ("gpt-4", 129), ("gpt-4o", 124), ("gpt-4o-mini", 124)],
)
def test_cookbook_prompt_totals(model: str, expected: int) -> None:
    reply_priming = 3
    assert sum(count_message_tokens(m, model) for m in COOKBOOK_MESSAGES) + reply_priming == expected


def test_message_overheads() -> None:
    hello = count_text_tokens("hello world", "gpt-4o")
    user = count_text_tokens("user", "gpt-4o")
    assert count_message_tokens({"role": "user", "content": "hello world"}, "gpt-4o") == 3 + user + hello
    named = count_message_tokens({"role": "user", "name": "bob", "content": "hello world"}, "gpt-4o")
    assert named == 3 + user + hello + count_text_tokens("bob", "gpt-4o") + 1
    assert count_message_tokens({}, "gpt-4o") == TOKENS_PER_MESSAGE


def test_list_content_counts_text_parts_and_flat_images() -> None:
    model = "gpt-4o"
    base = 3 + count_text_tokens("user", model)
    message: dict[str, object] = {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/b.png", "detail": "high"}},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            {"type": "text", "text": "Thanks."},
        ],
    }
    expected = (
        base
        + count_text_tokens("What is in this image?", model)
        + IMAGE_TOKENS_LOW_DETAIL
        + 2 * IMAGE_TOKENS_HIGH_DETAIL
        + count_text_tokens("Thanks.", model)
    )
    assert count_message_tokens(message, model) == expected
    # The same text as a string or as one text part costs the same.
    as_string = count_message_tokens({"role": "user", "content": "hi there"}, model)
    as_part = count_message_tokens({"role": "user", "content": [{"type": "text", "text": "hi there"}]}, model)
    assert as_string == as_part


def test_tool_calls_and_tool_results() -> None:
    model = "gpt-4o-mini"
    args = '{"location": "Paris, France", "unit": "celsius"}'
    assistant: dict[str, object] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": args}},
            {"id": "call_def", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ],
    }
    expected = (
        3
        + count_text_tokens("assistant", model)
        + 2 * TOKENS_PER_TOOL_CALL
        + count_text_tokens("get_weather", model)
        + count_text_tokens(args, model)
        + count_text_tokens("get_time", model)
        + count_text_tokens("{}", model)
    )
    assert count_message_tokens(assistant, model) == expected

    tool: dict[str, object] = {"role": "tool", "tool_call_id": "call_abc", "content": '{"temp": 21}'}
    assert count_message_tokens(tool, model) == (
        3
        + count_text_tokens("tool", model)
        + count_text_tokens("call_abc", model)
        + count_text_tokens('{"temp": 21}', model)
    )


def test_estimate_path_uses_same_overheads() -> None:
    model = "some-local-model"
    message: dict[str, object] = {
        "role": "assistant",  # 9 chars -> 3
        "name": "bot",  # 3 chars -> 1, + 1
        "content": [{"type": "text", "text": "x" * 10}, {"type": "image_url", "image_url": {"url": "u"}}],
        "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    expected = 3 + 3 + (1 + 1) + math.ceil(10 / 4) + IMAGE_TOKENS_HIGH_DETAIL + (TOKENS_PER_TOOL_CALL + 1 + 1)
    assert count_message_tokens(message, model) == expected


def test_malformed_fields_are_ignored() -> None:
    weird: dict[str, object] = {
        "role": 5,
        "content": {"not": "a list"},
        "name": None,
        "tool_calls": "nope",
        "tool_call_id": ["x"],
        "function_call": [],
    }
    assert count_message_tokens(weird, "gpt-4o") == 3
    listy: dict[str, object] = {
        "role": "user",
        "content": [None, 3, {"type": "text", "text": 7}, {"type": 1}],
    }
    assert count_message_tokens(listy, "gpt-4o") == 3 + count_text_tokens("user", "gpt-4o")


def test_note_describes_the_method() -> None:
    assert "o200k_base" in TOKENIZER_NOTE and "four characters" in TOKENIZER_NOTE


json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
message_keys = st.sampled_from(
    ["role", "content", "name", "tool_calls", "tool_call_id", "function_call", "refusal", "type", "text"]
)
messages = st.dictionaries(message_keys | st.text(max_size=8), json_values, max_size=8)
models = st.sampled_from([None, "gpt-4o", "gpt-4", "o3-mini", "claude-3-5-sonnet", "", "openai/gpt-4.1"])


@settings(max_examples=300, deadline=None)
@given(message=messages, model=models)
def test_any_json_message_counts_without_raising(message: dict[str, object], model: str | None) -> None:
    count = count_message_tokens(message, model)
    assert isinstance(count, int)
    assert count >= TOKENS_PER_MESSAGE


@settings(max_examples=200, deadline=None)
@given(text=st.text(), model=models)
def test_any_text_counts_without_raising(text: str, model: str | None) -> None:
    count = count_text_tokens(text, model)
    assert count >= 0
    assert (count == 0) == (text == "")


def test_bundled_rank_files_are_openais_published_files() -> None:
    # read_ranks checks the SHA-256 of each file against OpenAI's published hash (tiktoken_ext's).
    for name, size in (("o200k_base", 199_998), ("cl100k_base", 100_256)):
        ranks = read_ranks(name)
        assert len(ranks) == size
        assert sorted(ranks.values()) == list(range(size))


def test_needs_loading_is_false_once_built_and_for_models_without_an_encoding() -> None:
    assert needs_loading("some-local-model") is False  # estimated, nothing to build
    count_text_tokens("warm", "gpt-4o")
    assert needs_loading("gpt-4o") is False
    assert needs_loading("openai/gpt-4o-mini") is False  # same encoding
