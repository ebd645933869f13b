"""Money: exact `Decimal` USD in the code and the JSON, whole picodollars (1e-12 USD) in the database.

One place parses an amount given by a caller, rounds to picodollars, and renders USD, so that costs,
key budgets and conversation caps read and round the same way everywhere.
"""

from __future__ import annotations

import contextlib
import math
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import overload

from gateway.errors import InvalidRequest

PICODOLLARS_PER_USD = 10**12
MAX_PICODOLLARS = 2**63 - 1
"""The largest amount a 64-bit column holds: about 9.2 million USD."""
MAX_USD = Decimal(MAX_PICODOLLARS).scaleb(-12)


@overload
def to_picodollars(amount: Decimal) -> int: ...
@overload
def to_picodollars(amount: None) -> None: ...
def to_picodollars(amount: Decimal | None) -> int | None:
    """USD as whole picodollars, rounded half up (finer amounts are below any price); None stays None."""
    if amount is None:
        return None
    return int((amount * PICODOLLARS_PER_USD).to_integral_value(rounding=ROUND_HALF_UP))


@overload
def usd(picodollars: int) -> Decimal: ...
@overload
def usd(picodollars: None) -> None: ...
def usd(picodollars: int | None) -> Decimal | None:
    """Whole picodollars as exact USD; None stays None."""
    return None if picodollars is None else Decimal(picodollars).scaleb(-12)


def usd_text(amount: Decimal) -> str:
    """USD in plain positional notation without trailing zeros (0.00042, 12, 0): JSON and reports."""
    text = format(amount.normalize(), "f")
    return "0" if text in ("-0", "") else text


def fixed_text(picodollars: int, places: int = 6) -> str:
    """Picodollars as USD with a fixed number of decimals, for tables (rounded half up)."""
    quantum = Decimal(1).scaleb(-places)
    return format(usd(picodollars).quantize(quantum, rounding=ROUND_HALF_UP), "f")


def parse_usd(value: object, param: str, *, maximum: Decimal = MAX_USD, text: bool = False) -> int | None:
    """A USD amount given by a caller (a number; a numeric string too when `text`; None for none) in
    whole picodollars, from 0 to `maximum`; a 400 naming `param` otherwise."""
    if value is None:
        return None
    kinds: tuple[type, ...] = (int, float, Decimal, str) if text else (int, float, Decimal)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise InvalidRequest(
            f"Invalid type for '{param}': expected a number or null.", param=param, code="invalid_type"
        )
    amount = Decimal(-1)
    if not (isinstance(value, float) and not math.isfinite(value)):
        with contextlib.suppress(InvalidOperation):
            amount = Decimal(str(value).strip())
    if not amount.is_finite() or amount < 0 or amount > maximum:
        raise InvalidRequest(
            f"Invalid value for '{param}': expected a number of USD from 0 to {usd_text(maximum)}.",
            param=param,
            code="invalid_value",
        )
    return to_picodollars(amount)
