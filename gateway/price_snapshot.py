"""genai-prices' flat prices, read from a file generated from the installed genai-prices, without loading it.

Loading genai-prices builds its whole price database as pydantic objects: ~15 MB and ~0.1 s in every
serving process, for the one or two models a deployment uses. `prices_snapshot.json` (next to this module)
holds, for every model name genai-prices' data spells out (model ids and the names in their match rules,
lowercased), what genai-prices itself resolves that name to: a flat price (one that neither has tiers nor
changes with the date) as per-kind prices, "library" (tiered or date-dependent: ask genai-prices on each
call), or null (no price). `python -m gateway.library_prices` writes it; a test checks it against the
installed genai-prices, and `requirements/upgrade` rewrites it.

The snapshot is used only when the installed genai-prices is the version it was made from; otherwise, and
for any name it does not list, prices come from genai-prices itself (gateway/library_prices.py).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from decimal import Decimal
from importlib import metadata, resources
from typing import Any, Final, Literal

__all__ = ["LIBRARY", "AffinePrice", "Answer", "PriceSnapshot", "decode", "encode"]

log = logging.getLogger("gateway.pricing")

SNAPSHOT_FILE: Final = "prices_snapshot.json"
DISTRIBUTION: Final = "genai-prices"

LIBRARY: Final = "library"
"""A snapshot answer: this name's price must come from genai-prices itself (tiered, dated or not listed)."""

_PER_TOKENS = Decimal(1_000_000)


@dataclass(frozen=True)
class AffinePrice:
    """A genai-prices price without tiers, as what it costs per 1M tokens of each kind (and per call)."""

    total: tuple[Decimal, Decimal, Decimal, Decimal]  # per call, per 1M uncached, cached, completion
    input: tuple[Decimal, Decimal, Decimal]  # per call, per 1M uncached, cached
    write: tuple[Decimal, Decimal]  # per 1M cache-write tokens: in the total, in the input part

    def cost(self, prompt: int, cached: int, completion: int, written: int = 0) -> tuple[Decimal, Decimal]:
        """(total, input part), as genai-prices computes them: each token kind times its price, summed."""
        uncached = prompt - cached - written
        base, per_uncached, per_cached, per_output = self.total
        total = (
            base
            + (
                uncached * per_uncached
                + cached * per_cached
                + written * self.write[0]
                + completion * per_output
            )
            / _PER_TOKENS
        )
        base_in, in_uncached, in_cached = self.input
        input_part = (uncached * in_uncached + cached * in_cached + written * self.write[1]) / _PER_TOKENS
        return total, base_in + input_part

    def to_json(self) -> list[str]:
        """The nine prices as exact decimal strings."""
        return [str(value) for value in (*self.total, *self.input, *self.write)]

    @classmethod
    def from_json(cls, values: list[str]) -> AffinePrice:
        """Read `to_json`'s strings back (ValueError on any other shape)."""
        if not isinstance(values, list) or len(values) != 9 or not all(isinstance(v, str) for v in values):
            raise ValueError(f"not nine prices: {values!r}")
        d = [Decimal(value) for value in values]
        return cls(total=(d[0], d[1], d[2], d[3]), input=(d[4], d[5], d[6]), write=(d[7], d[8]))


Answer = AffinePrice | None | Literal["library"]


def encode(version: str, answers: dict[str, Answer]) -> str:
    """The snapshot file's text for `answers` (name -> price, None or LIBRARY) of genai-prices `version`."""
    prices: list[list[str]] = []
    index: dict[AffinePrice, int] = {}
    names: dict[str, int | str | None] = {}
    for name in sorted(answers):
        answer = answers[name]
        if isinstance(answer, AffinePrice):
            if answer not in index:
                index[answer] = len(prices)
                prices.append(answer.to_json())
            names[name] = index[answer]
        else:
            names[name] = answer
    # One price and one name per line, so that an upgrade's diff shows what changed.
    lines = [
        "{",
        '"generated_by": "python -m gateway.library_prices (do not edit)",',
        f'"genai_prices": {json.dumps(version)},',
        '"prices": [',
        ",\n".join(json.dumps(values) for values in prices),
        "],",
        '"names": {',
        ",\n".join(f"{json.dumps(name)}: {json.dumps(value)}" for name, value in names.items()),
        "}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def decode(text: str) -> tuple[str, dict[str, Answer]]:
    """(genai-prices version, name -> answer) from a snapshot file's text; ValueError when malformed."""
    document: Any = json.loads(text)
    prices = [AffinePrice.from_json(values) for values in document["prices"]]
    answers: dict[str, Answer] = {}
    for name, value in document["names"].items():
        if value is None or value == LIBRARY:
            answers[name] = value
        elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(prices):
            answers[name] = prices[value]
        else:
            raise ValueError(f"bad snapshot entry for {name!r}: {value!r}")
    version = document["genai_prices"]
    if not isinstance(version, str):
        raise ValueError("the snapshot names no genai-prices version")
    return version, answers


def installed_version() -> str | None:
    """The installed genai-prices version (read from its metadata, without importing it), or None."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None


class PriceSnapshot:
    """The bundled snapshot, read on first use; empty when it was made from another genai-prices version."""

    def __init__(self, text: str | None = None, version: str | None = None) -> None:
        """`text` and `version` replace the bundled file and the installed version (for tests)."""
        self._text = text
        self._version = version
        self._answers: dict[str, Answer] | None = None
        self._lock = threading.Lock()

    def load(self) -> dict[str, Answer]:
        """Read the snapshot now (once; a few ms), not on the first lookup."""
        with self._lock:
            if self._answers is None:
                try:
                    text = self._text
                    if text is None:
                        text = resources.files("gateway").joinpath(SNAPSHOT_FILE).read_text(encoding="utf-8")
                    made_from, answers = decode(text)
                except (OSError, ValueError, KeyError, TypeError) as exc:  # a broken installation
                    log.warning("the price snapshot is unusable (%s): genai-prices prices every call", exc)
                    made_from, answers = "", {}
                installed = self._version if self._version is not None else installed_version()
                self._answers = answers if made_from == installed else {}
            return self._answers

    def lookup(self, model: str) -> Answer:
        """What genai-prices answers for `model`: its flat price, None (no price) or LIBRARY (ask it)."""
        answers = self._answers if self._answers is not None else self.load()
        return answers.get(model.lower(), LIBRARY)
