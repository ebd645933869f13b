"""Prices and the cost of a call, in exact Decimal USD.

A price comes from the `GATEWAY_PRICES_FILE` first (the exact model name, then the longest entry
that is a prefix of it), and otherwise from the `genai-prices` package's data: from the snapshot of its
flat prices that ships with the gateway (gateway/price_snapshot.py) where that has the model, else from
genai-prices itself, loaded on first need (gateway/library_prices.py). The package is only ever read:
its background updater is never started, so no network call happens. A model with no known price has
a cost of None, never 0.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from gateway.config import ConfigError
from gateway.price_snapshot import LIBRARY, PriceSnapshot

if TYPE_CHECKING:
    from gateway.library_prices import LibraryPrices

__all__ = [
    "CallCost",
    "Price",
    "Pricer",
    "Usage",
    "cost_usd",
    "load_prices_file",
    "parse_usage",
]

_PER_TOKENS = Decimal(1_000_000)
_PRICE_FIELDS = ("input", "cached_input", "cache_write", "output")


@dataclass(frozen=True)
class Price:
    """Prices in USD per 1M tokens: uncached prompt, cached prompt, completion and cache-write tokens.

    `cache_write` None means the input price (OpenAI bills no cache writes).
    """

    input: Decimal
    cached_input: Decimal
    output: Decimal
    cache_write: Decimal | None = None


@dataclass(frozen=True)
class Usage:
    """Token usage as OpenAI reports it: cached is part of prompt, reasoning part of completion tokens."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0  # part of prompt_tokens, like cached_tokens


MAX_COUNT = 2**31 - 1
"""The largest token count the request log stores (its columns are 32-bit on Postgres)."""


def _count(value: object) -> int | None:
    """A token count as reported: a non-negative integer (JSON true/false are not counts)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _out_of_range(value: object) -> bool:
    """True for a whole number no real count can be (beyond the request log's columns)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > MAX_COUNT


def _detail(details: object, name: str) -> int:
    return (_count(details.get(name)) if isinstance(details, dict) else None) or 0


def _cache_counts(usage: dict[str, Any], details: object) -> tuple[int, int]:
    """(cache reads, cache writes): OpenAI's `*_tokens_details`, else the Anthropic-style top-level names
    that OpenAI-compatible layers report (`cache_read_input_tokens`, `cache_creation_input_tokens`)."""
    read = _count(details.get("cached_tokens")) if isinstance(details, dict) else None
    write = _count(details.get("cache_write_tokens")) if isinstance(details, dict) else None
    if read is None:
        read = _count(usage.get("cache_read_input_tokens"))
    if write is None:
        write = _count(usage.get("cache_creation_input_tokens"))
    return read or 0, write or 0


def parse_usage(payload: object) -> Usage | None:
    """The `usage` of an OpenAI response or chunk as a Usage; None when the upstream reported none.

    Reads chat/embeddings names (`prompt_tokens`, `completion_tokens`, `*_tokens_details`) and the
    Responses API names (`input_tokens`, `output_tokens`). Usage without a valid prompt count, or with
    a count above MAX_COUNT, is no usage (None, never a made-up 0); missing completion, cached or
    reasoning counts are 0, as OpenAI omits them when they are 0 (embeddings have no completion tokens).
    """
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(usage, dict):
        return None
    if "prompt_tokens" in usage:
        prompt = _count(usage.get("prompt_tokens"))
        output, prompt_details, output_details = (
            "completion_tokens",
            "prompt_tokens_details",
            "completion_tokens_details",
        )
    else:
        prompt = _count(usage.get("input_tokens"))
        output, prompt_details, output_details = (
            "output_tokens",
            "input_tokens_details",
            "output_tokens_details",
        )
    if prompt is None:
        return None
    counts = [usage.get(output)]
    for details, name in ((prompt_details, "cached_tokens"), (output_details, "reasoning_tokens")):
        if isinstance(usage.get(details), dict):
            counts.append(usage[details].get(name))
    cached, written = _cache_counts(usage, usage.get(prompt_details))
    if _out_of_range(prompt) or any(_out_of_range(count) for count in [*counts, cached, written]):
        return None  # a count beyond any real call: not usage the log can hold (recorded as null)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=_count(usage.get(output)) or 0,
        cached_tokens=cached,
        reasoning_tokens=_detail(usage.get(output_details), "reasoning_tokens"),
        cache_write_tokens=written,
    )


@dataclass(frozen=True)
class CallCost:
    """The cost of one call, the share of it spent on re-sent history, and what a full replay of the whole
    stored history, uncached, would have cost; in USD (None when unknown)."""

    cost_usd: Decimal | None
    history_cost_usd: Decimal | None
    full_replay_cost_usd: Decimal | None = None


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ConfigError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> object:
    raise ConfigError(f"{name} is not a price")


def _price_value(path: str, model: str, field: str, raw: object) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, int | Decimal):
        raise ConfigError(f"prices file {path}: {model!r}.{field} must be a number, got {raw!r}")
    value = Decimal(raw)
    if not value.is_finite() or value < 0:
        raise ConfigError(f"prices file {path}: {model!r}.{field} must not be negative, got {raw}")
    return value


def load_prices_file(path: str) -> dict[str, Price]:
    """Read a prices file: `{"model": {"input": n, "cached_input": n, "output": n}}` in USD per 1M tokens.

    `cached_input` is optional and defaults to `input`. Numbers are parsed as exact Decimals (0.15
    stays 0.15). Raises ConfigError on an unreadable file, bad JSON, a wrong shape, an unknown or
    missing field, a duplicate model, or a negative price.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read prices file {path}: {exc}") from None
    try:
        data: object = json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_reject_constant,
            object_pairs_hook=_reject_duplicates,
        )
    except json.JSONDecodeError as exc:
        raise ConfigError(f"prices file {path} is not valid JSON: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"prices file {path} is not usable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f'prices file {path} must be a JSON object {{"model": {{"input": .., "output": ..}}}}, '
            f"got {type(data).__name__}"
        )
    prices: dict[str, Price] = {}
    for model, entry in data.items():
        if not model.strip():
            raise ConfigError(f"prices file {path}: a model name must not be empty")
        if not isinstance(entry, dict):
            raise ConfigError(
                f'prices file {path}: {model!r} must be an object like {{"input": 0.15, "output": 0.6}}, '
                f"got {entry!r}"
            )
        unknown = sorted(set(entry) - set(_PRICE_FIELDS))
        if unknown:
            raise ConfigError(
                f"prices file {path}: {model!r} has unknown field(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(_PRICE_FIELDS)}"
            )
        missing = [field for field in ("input", "output") if field not in entry]
        if missing:
            raise ConfigError(f"prices file {path}: {model!r} lacks {' and '.join(missing)}")
        input_price = _price_value(path, model, "input", entry["input"])
        cached = entry.get("cached_input")
        write = entry.get("cache_write")
        prices[model] = Price(
            input=input_price,
            cached_input=input_price if cached is None else _price_value(path, model, "cached_input", cached),
            output=_price_value(path, model, "output", entry["output"]),
            cache_write=None if write is None else _price_value(path, model, "cache_write", write),
        )
    return prices


def _clamped(usage: Usage) -> tuple[int, int, int]:
    """Return (prompt, cached, completion) with negatives raised to 0 and cached capped at prompt."""
    prompt = max(usage.prompt_tokens, 0)
    cached = min(max(usage.cached_tokens, 0), prompt)
    return prompt, cached, max(usage.completion_tokens, 0)


def _written(usage: Usage) -> int:
    """Cache-write tokens, capped at what the prompt holds besides the cache reads."""
    prompt, cached, _ = _clamped(usage)
    return min(max(usage.cache_write_tokens, 0), prompt - cached)


def _input_cost(usage: Usage, price: Price) -> Decimal:
    prompt, cached, _ = _clamped(usage)
    written = _written(usage)
    write_price = price.input if price.cache_write is None else price.cache_write
    fresh = prompt - cached - written
    return (fresh * price.input + cached * price.cached_input + written * write_price) / _PER_TOKENS


def _output_cost(usage: Usage, price: Price) -> Decimal:
    # Reasoning tokens are already counted in completion_tokens (OpenAI semantics): not added again.
    _, _, completion = _clamped(usage)
    return completion * price.output / _PER_TOKENS


def cost_usd(usage: Usage, price: Price | None) -> Decimal | None:
    """Return ((prompt - cached - written) x input + cached x cached_input + written x cache_write
    + completion x output) / 1e6 in USD.

    None when the price is unknown. Nothing is quantized: the result keeps full Decimal precision.
    Negative counts are read as 0 and cached tokens are capped at the prompt tokens.
    """
    if price is None:
        return None
    return _input_cost(usage, price) + _output_cost(usage, price)


def _history_cost(input_cost: Decimal, prompt_tokens: int, history_tokens: int | None) -> Decimal | None:
    """The blended input price per prompt token times min(history, prompt) tokens."""
    if history_tokens is None:
        return None
    share = min(max(history_tokens, 0), max(prompt_tokens, 0))
    if share == 0:
        return Decimal(0)
    # Multiply before dividing, so that a whole-prompt share is exact.
    return input_cost * share / prompt_tokens


_SNAPSHOT = PriceSnapshot()
"""The bundled snapshot of genai-prices' flat prices, shared by every Pricer of the process."""


def library_counts(usage: Usage) -> tuple[int, int, int, int]:
    """(prompt, cached, completion, cache-write) tokens, clamped, as genai-prices' prices take them."""
    return (*_clamped(usage), _written(usage))


class Pricer:
    """Prices calls: the prices file first, then genai-prices; unknown models cost None."""

    def __init__(self, overrides: Mapping[str, Price], snapshot: PriceSnapshot = _SNAPSHOT) -> None:
        """Keep a private copy of the file's prices, indexed for the longest-prefix lookup."""
        self._overrides: Mapping[str, Price] = MappingProxyType(dict(overrides))
        self._by_length: tuple[str, ...] = tuple(sorted(self._overrides, key=len, reverse=True))
        self._snapshot = snapshot
        self._library: LibraryPrices | None = None

    def warm_up(self) -> None:
        """Read the price snapshot now (a few ms), not on the first call that needs a price."""
        self._snapshot.load()

    @classmethod
    def from_file(cls, path: str | None) -> Pricer:
        """Build a pricer from a prices file (None: genai-prices only); raises ConfigError on a bad file."""
        return cls(load_prices_file(path) if path is not None else {})

    def _lookup(self, name: str) -> Price | None:
        exact = self._overrides.get(name)
        if exact is not None:
            return exact
        for key in self._by_length:
            if name.startswith(key):
                return self._overrides[key]
        return None

    def price_for(self, model: str) -> Price | None:
        """Return the prices file's price: the exact name, then the longest entry that prefixes it.

        A provider-prefixed name ("openai/gpt-4o") that matches nothing is tried again without its
        prefix. None when the file has no price; genai-prices is consulted only by `cost`.
        """
        price = self._lookup(model)
        if price is None and "/" in model:
            price = self._lookup(model.rsplit("/", 1)[1])
        return price

    def _priced(self, model: str, usage: Usage) -> tuple[Decimal, Decimal] | None:
        """(total, input part) of a call, or None when the model has no known price."""
        price = self.price_for(model)
        if price is not None:
            return cost_usd(usage, price) or Decimal(0), _input_cost(usage, price)
        answer = self._snapshot.lookup(model)
        if answer is None:
            return None
        if answer != LIBRARY:
            return answer.cost(*library_counts(usage))
        if self._library is None:
            from gateway.library_prices import LibraryPrices  # genai-prices: ~15 MB, only when needed

            self._library = LibraryPrices()
        return self._library.cost(model, library_counts(usage))

    def cost(
        self,
        model: str | None,
        usage: Usage | None,
        history_tokens: int | None = None,
        *,
        left_out_tokens: int | None = 0,
    ) -> CallCost:
        """Return the call's cost, its history share and its full-replay cost in USD; None where unknown.

        `history_cost_usd` is the input part of the cost divided by the prompt tokens, times
        min(history_tokens, prompt_tokens); 0 when history_tokens is 0, None when history_tokens
        is None. `full_replay_cost_usd` prices the prompt plus `left_out_tokens` (stored history the
        call did not send, less the summary it sent instead) at the uncached input price, plus the
        output; `left_out_tokens=None` means the call is no part of a full replay (0 USD). Prices of
        genai-prices that depend on the date use the current time.
        """
        if model is None or usage is None:
            return CallCost(None, None, None)
        found = self._priced(model, usage)
        if found is None:
            return CallCost(None, None, None)
        total, input_cost = found
        history = _history_cost(input_cost, _clamped(usage)[0], history_tokens)
        if left_out_tokens is None:
            return CallCost(total, history, Decimal(0))
        prompt, _, completion = _clamped(usage)
        replay = self._priced(model, Usage(max(prompt + left_out_tokens, 0), completion))
        return CallCost(total, history, None if replay is None else replay[0])
