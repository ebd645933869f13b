"""Who the caller is: the hash of their bearer token (pass-through) or a gateway key (gateway-held key).

In both modes the identity is the hex SHA-256 of the presented bearer token, so a gateway key's identity
equals its stored `secret_hash`. Key lookups are cached in process for `GATEWAY_KEY_CACHE_SECONDS`
(positive answers only), so a revocation reaches every process within that time (at once on the process
that served `DELETE /admin/keys/{name}`).
"""

from __future__ import annotations

import functools
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from gateway.config import Settings
from gateway.errors import AuthenticationFailed, BudgetExceeded, DatabaseUnavailable
from gateway.identity import caller_identity
from gateway.keys import KeyInfo
from gateway.money import usd, usd_text
from gateway.store.database import Database
from gateway.store.keys import find_active_key, has_active_keys
from gateway.store.spend import caller_spent_pusd

CACHE_LIMIT = 10_000
NO_TOKEN = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
NO_KEYS_YET = (
    "This gateway holds the upstream API key, so callers need a gateway key, and none exists yet. "
    "Create one with `gateway keys create NAME` (or POST /admin/keys with the admin key) and send it "
    "as the bearer token."
)
NOT_A_KEY = "Incorrect API key provided: an API key is printable ASCII without spaces."
ADMIN_NOT_A_CALLER = (
    "The admin key (GATEWAY_ADMIN_KEY) is for the admin endpoints only: it is not a caller's API key "
    "and is never sent upstream."
)
WRONG_KEY = (
    "Incorrect API key provided. This gateway needs a gateway key (created with "
    "`gateway keys create NAME`) as the bearer token."
)


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: identity (hash of the token), the raw token (never stored), its key."""

    identity: str
    token: str
    key_name: str | None = None
    budget_pusd: int | None = None


def _known_key(connection: Connection, identity: str) -> KeyInfo:
    """A unit of work: the unrevoked key of this identity; 401 (saying whether any key exists) if none."""
    key = find_active_key(connection, identity)
    if key is None or not hmac.compare_digest(key.identity, identity):
        raise AuthenticationFailed(WRONG_KEY if has_active_keys(connection) else NO_KEYS_YET)
    return key


def same_secret(presented: str, expected: str) -> bool:
    """Compare two secrets in constant time (any characters)."""
    return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


class Authenticator:
    """Resolves a bearer token to a caller, checks the admin key and key budgets."""

    def __init__(self, db: Database, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.gateway_keys = settings.upstream_api_key is not None
        self.admin_key = settings.admin_key
        self.cache_seconds = settings.key_cache_seconds
        self.clock = clock
        self._cache: dict[str, tuple[Caller, float]] = {}

    async def identify(self, token: str) -> Caller:
        """The caller presenting `token`; 401 without a token, or without a valid key in key mode."""
        if not token or not token.isascii() or not token.isprintable():
            # no API key has such characters; none reach the upstream
            refusal = NO_TOKEN if not token else NOT_A_KEY
            if self.gateway_keys and not await self._has_keys():
                refusal = f"{refusal} {NO_KEYS_YET}"
            raise AuthenticationFailed(refusal)
        if self.is_admin(token):
            raise AuthenticationFailed(ADMIN_NOT_A_CALLER)  # in pass-through mode it would go upstream
        identity = caller_identity(token)
        if not self.gateway_keys:
            return Caller(identity=identity, token=token)  # the upstream judges the token
        now = self.clock()
        cached = self._cache.get(identity)
        if cached is not None and cached[1] > now:
            return cached[0]
        key = await self.db.run(functools.partial(_known_key, identity=identity))
        caller = Caller(identity=identity, token=token, key_name=key.name, budget_pusd=key.budget_pusd)
        if self.cache_seconds > 0:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[identity] = (caller, now + self.cache_seconds)
        return caller

    async def _has_keys(self) -> bool:
        """True when a gateway key exists (assumed when the database cannot say: the refusal stands)."""
        try:
            return await self.db.run(has_active_keys)
        except DatabaseUnavailable:
            return True

    def forget(self, identity: str) -> None:
        """Drop a cached key at once (after a revocation in this process)."""
        self._cache.pop(identity, None)

    def is_admin(self, token: str) -> bool:
        """True when admin access is configured and `token` is the admin key."""
        return bool(token) and self.admin_key is not None and same_secret(token, self.admin_key)

    async def check_budget(self, caller: Caller) -> None:
        """429 budget_exceeded when the caller's key has a budget and its recorded cost reached it.

        One aggregate query, before any work: a spent key is refused at once. Concurrent calls are
        bounded by the reservation each call then makes (see budgets.py), not by this check.
        """
        if caller.budget_pusd is None:
            return
        spent = await self.db.run(functools.partial(caller_spent_pusd, owner=caller.identity))
        if spent >= caller.budget_pusd:
            budget = usd_text(usd(caller.budget_pusd))
            raise BudgetExceeded(
                f"The key '{caller.key_name}' has spent its budget of {budget} USD; "
                "ask the gateway's operator for a new key or a larger budget."
            )
