"""Token counting for chat messages, offline, with the tokenizers bundled in `bpe_openai`.

OpenAI models are counted with their real byte-pair encoding (o200k_base or cl100k_base, both
shipped inside the `bpe_openai` wheel, so nothing is downloaded). Every other model gets a
documented estimate of one token per four characters. Message overheads follow OpenAI's cookbook
"How to count tokens with tiktoken": 3 tokens per message, 1 more when the message has a name.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping
from typing import Protocol, cast

__all__ = [
    "IMAGE_TOKENS_HIGH_DETAIL",
    "IMAGE_TOKENS_LOW_DETAIL",
    "TOKENIZER_NOTE",
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_NAME",
    "TOKENS_PER_TOOL_CALL",
    "count_message_tokens",
    "count_text_tokens",
    "encoding_name_for_model",
]

TOKENS_PER_MESSAGE = 3
"""Every message is wrapped as `<|start|>{role}<|message|>{content}<|end|>` (OpenAI cookbook)."""

TOKENS_PER_NAME = 1
"""A message with a `name` costs one token more than the name's own tokens (OpenAI cookbook)."""

TOKENS_PER_TOOL_CALL = 3
"""Estimated wrapping of one tool call (its start, recipient and end markers); not documented by OpenAI."""

IMAGE_TOKENS_LOW_DETAIL = 85
"""OpenAI's documented flat cost of an image sent with `detail: "low"`."""

IMAGE_TOKENS_HIGH_DETAIL = 765
"""OpenAI's documented cost of a 1024x1024 image in high detail (85 + 4 tiles x 170); used for any size."""

CHARS_PER_TOKEN = 4
"""The estimate for models without a known encoding: one token per four characters, rounded up."""

TOKENIZER_NOTE = (
    "Token counts are computed offline. OpenAI models use their real tokenizer: o200k_base for "
    "gpt-4o, chatgpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1, o3, o4 and gpt-oss models, cl100k_base for "
    "gpt-4, gpt-3.5, text-embedding-3 and text-embedding-ada-002 (a provider prefix such as "
    '"openai/" and a fine-tune prefix "ft:" are ignored), using the encodings bundled in the '
    "bpe-openai package. A chat message costs what OpenAI's cookbook documents: 3 tokens of "
    "overhead plus the tokens of its role and content, plus its name and 1 more token when it has "
    "one; the text parts of list content are counted, an image part counts a flat 85 tokens with "
    'detail "low" and 765 otherwise (a 1024x1024 image in high detail), and other parts (audio, '
    "files) are not counted; each tool call counts its function name and arguments plus 3 tokens, "
    "and a tool result counts its tool_call_id. Any other model gets an estimate of one token per "
    "four characters of each of those text fields, rounded up, with the same overheads. Counts are "
    "estimates of what the upstream will bill (tool definitions and the 3 tokens that prime the "
    "reply are not part of any message) and serve to trim history, never to bill."
)

_O200K_PREFIXES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "gpt-oss")
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-3", "text-embedding-ada-002")

# bpe_openai refuses one call of 1,000,000 characters or more, or one that yields more than 200,000
# tokens. A character is at most 4 UTF-8 bytes and a token at least 1 byte, so 40,000 characters
# can never exceed either limit; longer texts are counted in pieces of at most this size.
_MAX_CHARS_PER_CALL = 40_000


class _Encoding(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


@functools.cache
def _encoding(name: str) -> _Encoding:
    """Load a bundled encoding once per process.

    The import is deferred to the first count: importing bpe_openai reads every bundled rank table
    (about 0.4 s), and building one encoding takes another 20-70 ms. bpe_openai 0.1.4 reads its
    tables with the deprecated `importlib.resources.open_binary`; that DeprecationWarning is
    silenced here, once, so that a `-W error` test run does not turn it into a failed count.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai  # deliberately lazy, see above

        return cast(_Encoding, bpe_openai.get_encoding(name))


def encoding_name_for_model(model: str | None) -> str | None:
    """Return the tiktoken encoding name an OpenAI model uses, or None when the model is not known."""
    if not model:
        return None
    name = model.rsplit("/", 1)[-1].strip().lower()
    if name.startswith("ft:"):
        name = name[3:]
    if not name:
        return None
    if name.startswith(_O200K_PREFIXES):
        return "o200k_base"
    if name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return None


def _encoded_length(encoding: _Encoding, text: str) -> int:
    """Count the tokens of `text`, in pieces that stay within bpe_openai's per-call limits."""
    length = len(text)
    if length <= _MAX_CHARS_PER_CALL:
        return len(encoding.encode_ordinary(text))
    total = 0
    start = 0
    while start < length:
        end = min(start + _MAX_CHARS_PER_CALL, length)
        if end < length:
            # Cut just before a space: the tokenizer keeps a space with the word after it, so the
            # pieces split exactly where the tokenizer would (a text without spaces is cut anywhere).
            cut = text.rfind(" ", start + 1, end)
            if cut > start:
                end = cut
        total += len(encoding.encode_ordinary(text[start:end]))
        start = end
    return total


def _text_tokens(text: str, encoding_name: str | None) -> int:
    if not text:
        return 0
    if encoding_name is None:
        return math.ceil(len(text) / CHARS_PER_TOKEN)
    return _encoded_length(_encoding(encoding_name), text)


def count_text_tokens(text: str, model: str | None) -> int:
    """Return the tokens of a plain text for `model`: exact for OpenAI models, ceil(chars / 4) otherwise."""
    return _text_tokens(text, encoding_name_for_model(model))


def _image_tokens(image: object) -> int:
    detail = image.get("detail") if isinstance(image, Mapping) else None
    return IMAGE_TOKENS_LOW_DETAIL if detail == "low" else IMAGE_TOKENS_HIGH_DETAIL


def _content_tokens(content: object, encoding_name: str | None) -> int:
    if isinstance(content, str):
        return _text_tokens(content, encoding_name)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if isinstance(part, str):
            total += _text_tokens(part, encoding_name)
            continue
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text"):
            text = part.get("text")
            if isinstance(text, str):
                total += _text_tokens(text, encoding_name)
        elif kind == "refusal":
            refusal = part.get("refusal")
            if isinstance(refusal, str):
                total += _text_tokens(refusal, encoding_name)
        elif kind in ("image_url", "input_image"):
            image = part.get("image_url")
            total += _image_tokens(image if isinstance(image, Mapping) else part)
    return total


def _call_tokens(call: object, encoding_name: str | None) -> int:
    """Tokens of one tool call (or a legacy `function_call`): its name and arguments plus a wrapper."""
    if not isinstance(call, Mapping):
        return 0
    body = call.get("function")
    if not isinstance(body, Mapping):
        body = call.get("custom")
    if not isinstance(body, Mapping):
        body = call
    total = TOKENS_PER_TOOL_CALL
    for key in ("name", "arguments", "input"):
        value = body.get(key)
        if isinstance(value, str):
            total += _text_tokens(value, encoding_name)
    return total


def count_message_tokens(message: Mapping[str, object], model: str | None) -> int:
    """Return the prompt tokens one chat message costs for `model` (see TOKENIZER_NOTE); never below 3.

    Sum it over the messages of a request and add 3 (the tokens that prime the reply) to get
    OpenAI's documented prompt count.
    """
    encoding_name = encoding_name_for_model(model)
    total = TOKENS_PER_MESSAGE
    role = message.get("role")
    if isinstance(role, str):
        total += _text_tokens(role, encoding_name)
    total += _content_tokens(message.get("content"), encoding_name)
    name = message.get("name")
    if isinstance(name, str):
        total += _text_tokens(name, encoding_name) + TOKENS_PER_NAME
    refusal = message.get("refusal")
    if isinstance(refusal, str):
        total += _text_tokens(refusal, encoding_name)
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            total += _call_tokens(call, encoding_name)
    function_call = message.get("function_call")
    if isinstance(function_call, Mapping):
        total += _call_tokens(function_call, encoding_name)
    tool_call_id = message.get("tool_call_id")
    if isinstance(tool_call_id, str):
        total += _text_tokens(tool_call_id, encoding_name)
    return total
