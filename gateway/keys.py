"""Pure rules for gateway keys: names, secrets, the budget cap (the JSON view is in gateway.views)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from decimal import Decimal

from gateway.errors import InvalidRequest

KEY_NAME_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
SECRET_PREFIX = "gw-"
# A budget is stored as integer picodollars (gateway.money); one million USD is ample for a key.
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
