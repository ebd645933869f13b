"""Prices from the genai-prices package itself, and the snapshot of them that the gateway ships.

Imported only for a model the bundled snapshot (gateway/price_snapshot.py) does not price: loading
genai-prices costs ~15 MB and ~0.1 s. The package is only ever read: its background updater is never
started, so no network call happens.

`python -m gateway.library_prices` rewrites gateway/prices_snapshot.json from the installed genai-prices.

Counts are passed as (prompt, cached, completion, written): prompt tokens including the cached and
cache-write ones, as OpenAI reports them, already clamped by the caller (gateway/pricing.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import genai_prices
import genai_prices.data_snapshot
from genai_prices.types import ModelPrice, TieredPrices

from gateway.price_snapshot import LIBRARY, SNAPSHOT_FILE, AffinePrice, Answer, encode, installed_version

__all__ = ["LibraryPrices", "build_snapshot", "library_cost"]

Counts = tuple[int, int, int, int]  # prompt, cached, completion, written

_MTOK = 1_000_000


def library_refs(model: str) -> list[tuple[str, str | None]]:
    """The (model_ref, provider_id) lookups to try in genai-prices, most specific first."""
    refs: list[tuple[str, str | None]] = []
    if "/" in model:
        provider, rest = model.split("/", 1)
        if provider and rest:
            refs.append((rest, provider))
        model = model.rsplit("/", 1)[1]
        if not model:
            return refs
    refs.append((model, "openai"))
    refs.append((model, None))
    return refs


def _usage(counts: Counts) -> genai_prices.Usage:
    prompt, cached, completion, written = counts
    # genai-prices' input_tokens include the cache reads and writes (it bills the rest at the input
    # price), exactly like OpenAI's prompt_tokens include cached_tokens.
    return genai_prices.Usage(
        input_tokens=prompt, cache_read_tokens=cached, cache_write_tokens=written, output_tokens=completion
    )


def library_cost(model: str, counts: Counts) -> tuple[Decimal, Decimal] | None:
    """Return (total, input part) of the call from genai-prices' bundled data, or None if unknown."""
    usage = _usage(counts)
    for model_ref, provider_id in library_refs(model):
        try:
            calc = genai_prices.calc_price(usage, model_ref, provider_id=provider_id)
        except (LookupError, ValueError):
            continue
        return calc.total_price, calc.input_price
    return None


def affine_price(info: Any, provider: Any, model_price: Any, now: datetime) -> AffinePrice | None:
    """The per-kind prices of an untiered genai-prices price, measured with genai-prices itself.

    Without tiers, genai-prices' price is affine in the uncached, cached and completion token counts
    (each priced unit costs price x count), so five calls at 0 and 1M tokens give it exactly.
    """
    if any(isinstance(value, TieredPrices) for value in vars(model_price).values()):
        return None

    def calc(prompt: int, cached: int, completion: int, written: int = 0) -> tuple[Decimal, Decimal]:
        usage = _usage((prompt, cached, completion, written))
        result = info.calc_price(usage, provider, genai_request_timestamp=now)
        return result.total_price, result.input_price

    (zero, zero_in), (fresh, fresh_in) = calc(0, 0, 0), calc(_MTOK, 0, 0)
    (hit, hit_in), (out, _) = calc(_MTOK, _MTOK, 0), calc(0, 0, _MTOK)
    write, write_in = calc(_MTOK, 0, 0, _MTOK)
    return AffinePrice(
        total=(zero, fresh - zero, hit - zero, out - zero),
        input=(zero_in, fresh_in - zero_in, hit_in - zero_in),
        write=(write - zero, write_in - zero_in),
    )


class LibraryPrices:
    """genai-prices, memoized: the model found once per name, untiered prices applied as per-kind prices.

    A genai-prices call spends ~0.1 ms on its unit bookkeeping; on the hot path a turn only needs the
    (date-dependent) price of its model applied to a few counts. Tiered prices still go through
    genai-prices on every call; anything unusual falls back to the plain `library_cost`.
    """

    def __init__(self) -> None:
        self._models: dict[str, tuple[Any, Any] | None] = {}
        self._affine: dict[int, tuple[Any, AffinePrice | None]] = {}

    def find(self, model: str) -> tuple[Any, Any] | None:
        """(provider, model info) genai-prices finds for `model`, or None."""
        if model not in self._models:
            snapshot = genai_prices.data_snapshot.get_snapshot()
            found = None
            for model_ref, provider_id in library_refs(model):
                try:
                    found = snapshot.find_provider_model(model_ref, None, provider_id, None)
                except LookupError:
                    continue
                break
            self._models[model] = found
        return self._models[model]

    def cost(self, model: str, counts: Counts) -> tuple[Decimal, Decimal] | None:
        """(total, input part) of the call, equal to what `library_cost` returns."""
        found = self.find(model)
        if found is None:
            return None
        provider, info = found
        now = datetime.now(tz=UTC)
        try:
            model_price = info.get_prices(now)
            known = self._affine.get(id(model_price))
            if known is None or known[0] is not model_price:
                known = (model_price, affine_price(info, provider, model_price, now))
                self._affine[id(model_price)] = known
        except ValueError:
            return library_cost(model, counts)
        affine = known[1]
        if affine is None:
            return library_cost(model, counts)
        return affine.cost(*counts)


def _literals(clause: Any) -> Iterator[str]:
    """The strings a genai-prices match rule names (equals, starts_with, contains, ... at any depth)."""
    for value in vars(clause).values():
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            for inner in value:
                yield from _literals(inner)


def snapshot_names() -> set[str]:
    """Every model name genai-prices' data spells out: model ids and the strings of their match rules."""
    names: set[str] = set()
    for provider in genai_prices.data_snapshot.get_snapshot().providers:
        for model in provider.models:
            names.add(model.id.lower())
            names.update(literal.lower() for literal in _literals(model.match))
    return names


def _answer(prices: LibraryPrices, name: str, now: datetime) -> Answer:
    found = prices.find(name)
    if found is None:
        return None
    provider, info = found
    if not isinstance(info.prices, ModelPrice):  # conditional prices: they change with the date or hour
        return LIBRARY
    try:
        affine = affine_price(info, provider, info.get_prices(now), now)
    except ValueError:
        return LIBRARY
    return LIBRARY if affine is None else affine


def build_snapshot() -> str:
    """The text of prices_snapshot.json for the installed genai-prices."""
    prices = LibraryPrices()
    now = datetime.now(tz=UTC)
    answers = {name: _answer(prices, name, now) for name in snapshot_names()}
    version = installed_version()
    if version is None:
        raise RuntimeError("genai-prices is not installed")
    return encode(version, answers)


def snapshot_path() -> Path:
    """Where the bundled snapshot lives in this checkout or installation."""
    return Path(str(resources.files("gateway").joinpath(SNAPSHOT_FILE)))


def main() -> None:
    """Rewrite the bundled snapshot from the installed genai-prices."""
    path = snapshot_path()
    path.write_text(build_snapshot(), encoding="utf-8")
    print(f"wrote {path} (genai-prices {installed_version()})", file=sys.stderr)


if __name__ == "__main__":
    main()
