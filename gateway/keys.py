"""Pure rules for gateway keys: names, secrets, budgets, and the JSON shape of a key."""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.errors import InvalidRequest

KEY_NAME_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
SECRET_PREFIX = "gw-"
PUSD_PER_USD = 1_000_000_000_000
# A budget is stored as integer picodollars in a 64-bit column: one million USD leaves ample headroom.
MAX_BUDGET_USD = Decimal(1_000_000)


@dataclass(frozen=True)
class KeyInfo:
    """What is known about a gateway key (never its secret)."""

    name: str
    identity: str
    budget_pusd: int | None
    created_at: float
    revoked_at: float | None
    spent_pusd: int = 0


def new_secret() -> str:
    """A fresh key secret: `gw-` and 43 URL-safe characters (256 random bits)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def validate_key_name(name: object, param: str = "name") -> str:
    """Return the name when it is 1-64 characters of [A-Za-z0-9._:-]; raise a 400 otherwise."""
    if not isinstance(name, str) or KEY_NAME_PATTERN.fullmatch(name) is None:
        raise InvalidRequest(
            "A key name must be 1-64 characters of letters, digits, '.', '_', ':' or '-'.",
            param=param,
            code="invalid_value",
        )
    return name


def budget_pusd(value: object, param: str = "budget_usd") -> int | None:
    """A budget in USD (number or numeric string; None for no budget) as integer picodollars."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise InvalidRequest(
            f"Invalid type for '{param}': expected a number.", param=param, code="invalid_type"
        )
    if isinstance(value, float) and not math.isfinite(value):
        amount = Decimal(-1)
    else:
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            amount = Decimal(-1)
    if not amount.is_finite() or amount < 0 or amount > MAX_BUDGET_USD:
        raise InvalidRequest(
            f"Invalid value for '{param}': expected a number of USD from 0 to {MAX_BUDGET_USD}.",
            param=param,
            code="invalid_value",
        )
    return int((amount * PUSD_PER_USD).to_integral_value())


def usd(pusd: int | None) -> float | None:
    """Integer picodollars as a JSON number of USD (None stays None)."""
    if pusd is None:
        return None
    return float(Decimal(pusd) / PUSD_PER_USD)


def key_object(key: KeyInfo, secret: str | None = None) -> dict[str, Any]:
    """The JSON shape of a key; `secret` only in the answer that created it."""
    body: dict[str, Any] = {
        "object": "gateway.key",
        "name": key.name,
        "identity": key.identity,
        "created_at": int(key.created_at),
        "revoked_at": int(key.revoked_at) if key.revoked_at is not None else None,
        "budget_usd": usd(key.budget_pusd),
        "spent_usd": usd(key.spent_pusd),
    }
    if secret is not None:
        body["secret"] = secret
    return body
