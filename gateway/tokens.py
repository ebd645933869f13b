"""Token counting for chat messages, offline, with OpenAI's tokenizers (tiktoken) and bundled rank files.

OpenAI models are counted with their real byte-pair encoding (o200k_base or cl100k_base), run by
OpenAI's `tiktoken` from rank files shipped inside this package, so nothing is downloaded. Every other
model gets a documented estimate of one token per four characters. Message overheads follow OpenAI's cookbook
"How to count tokens with tiktoken": 3 tokens per message, 1 more when the message has a name.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import gzip
import hashlib
import io
import math
import threading
from collections.abc import Mapping
from importlib import resources
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
    "needs_loading",
    "read_ranks",
    "warm_up",
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
    "gateway package and run by tiktoken. A chat message costs what OpenAI's cookbook documents: 3 tokens of "
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

# Texts are encoded in pieces of at most this many characters, cut before a space (where the tokenizer
# would cut anyway), so one huge message never makes one huge call into the tokenizer.
_MAX_CHARS_PER_CALL = 40_000


@dataclasses.dataclass(frozen=True)
class _EncodingSpec:
    """What OpenAI publishes for one encoding (tiktoken_ext/openai_public.py): ranks, pattern, specials."""

    sha256: str
    pattern: str
    special_tokens: Mapping[str, int]


# The rank files ship inside this package (gateway/encodings/, gzipped copies of OpenAI's public
# `*.tiktoken` files, checked against OpenAI's published SHA-256 on load), so nothing is downloaded.
_SPECS = {
    "cl100k_base": _EncodingSpec(
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pattern=(
            r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
            r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
        ),
        special_tokens={
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    ),
    "o200k_base": _EncodingSpec(
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pattern="|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"""
                r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"""
                r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    ),
}


class _Encoding(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


def read_ranks(name: str) -> dict[bytes, int]:
    """Read one bundled rank file (`<base64 token> <rank>` per line), checked against OpenAI's hash."""
    raw = gzip.decompress(resources.files("gateway.encodings").joinpath(f"{name}.tiktoken.gz").read_bytes())
    if hashlib.sha256(raw).hexdigest() != _SPECS[name].sha256:
        raise RuntimeError(f"the bundled {name} ranks do not match OpenAI's published file")
    ranks: dict[bytes, int] = {}
    for line in io.BytesIO(raw):  # one at a time: a list of all 200,000 lines adds ~5 MB to the peak
        if parts := line.split():
            token, rank = parts
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _build(name: str) -> _Encoding:
    """Build one encoding with tiktoken (about 0.3-0.5 s and 35-50 MB each).

    tiktoken's Rust core keeps its own copy of the ranks; the Python dict handed to it is kept by
    `Encoding` only for pickling, which the gateway never does, so it is emptied (about 28 MB for
    o200k_base) to keep each process small.
    """
    import tiktoken  # deliberately lazy: a process that never counts never pays for it

    spec = _SPECS[name]
    ranks = read_ranks(name)
    encoding = tiktoken.Encoding(
        name, pat_str=spec.pattern, mergeable_ranks=ranks, special_tokens=dict(spec.special_tokens)
    )
    ranks.clear()
    return cast(_Encoding, encoding)


class _Encodings:
    """The encodings built so far in this process: each built once, on first use, by whichever thread asks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._built: dict[str, _Encoding] = {}

    def get(self, name: str) -> _Encoding:
        built = self._built.get(name)
        if built is None:
            with self._lock:
                built = self._built.get(name)
                if built is None:
                    built = self._built[name] = _build(name)
        return built

    def is_built(self, name: str) -> bool:
        return name in self._built


_ENCODINGS = _Encodings()


def _encoding(name: str) -> _Encoding:
    return _ENCODINGS.get(name)


def needs_loading(model: str | None) -> bool:
    """True when counting for `model` would first build its encoding (do that off the event loop)."""
    name = encoding_name_for_model(model)
    return name is not None and not _ENCODINGS.is_built(name)


def warm_up(model: str) -> None:
    """Build the encoding `model` uses, if any, so that the first request that needs it does not wait."""
    name = encoding_name_for_model(model)
    if name is not None:
        _ENCODINGS.get(name)


@functools.lru_cache(maxsize=256)  # a turn asks for each message it counts; a caller's models are few
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
    """Count the tokens of `text`, in pieces of at most _MAX_CHARS_PER_CALL characters."""
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


@functools.lru_cache(maxsize=32)  # every message counts its role, and there are a handful of roles
def _role_tokens(role: str, encoding_name: str | None) -> int:
    return _text_tokens(role, encoding_name)


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
        total += _role_tokens(role, encoding_name)
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
