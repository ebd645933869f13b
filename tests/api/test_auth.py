"""The Authenticator against a real (temporary SQLite) database: modes, the key cache, revocation, budgets."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import insert, update

from gateway import migrate
from gateway.auth import Authenticator
from gateway.config import Settings
from gateway.errors import AuthenticationFailed, BudgetExceeded
from gateway.identity import caller_identity
from gateway.store.database import Database, open_database
from gateway.store.keys import insert_key, revoke_key
from gateway.store.tables import API_KEYS, ATTEMPTS


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        """The current fake time."""
        return self.now


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated, empty SQLite database."""
    database = open_database(f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}", lease_seconds=60)
    try:
        await migrate.upgrade(database)
        yield database
    finally:
        await database.close()


async def add_key(db: Database, name: str, secret: str, budget_pusd: int | None = None) -> None:
    """Store a key as the CLI would."""
    await db.run(lambda c: insert_key(c, name, caller_identity(secret), budget_pusd, time.time()))


async def test_pass_through_identity_is_the_token_hash(db: Database) -> None:
    auth = Authenticator(db, Settings())
    caller = await auth.identify("sk-anything")
    assert caller.identity == caller_identity("sk-anything") and caller.key_name is None
    with pytest.raises(AuthenticationFailed):
        await auth.identify("")


async def test_key_mode_caches_positive_lookups_for_the_configured_time(db: Database) -> None:
    clock = Clock()
    auth = Authenticator(db, Settings(upstream_api_key="sk-up", key_cache_seconds=5), clock=clock)
    with pytest.raises(AuthenticationFailed, match="none exists yet"):
        await auth.identify("gw-unknown")
    await add_key(db, "bot", "gw-secret")
    with pytest.raises(AuthenticationFailed, match="Incorrect API key"):
        await auth.identify("gw-unknown")
    caller = await auth.identify("gw-secret")
    assert caller.key_name == "bot" and caller.identity == caller_identity("gw-secret")
    await db.run(lambda c: revoke_key(c, "bot", time.time()))  # revoked by another process (the CLI)
    clock.now += 4.9
    assert (await auth.identify("gw-secret")).key_name == "bot"  # still cached
    clock.now += 0.2
    with pytest.raises(AuthenticationFailed):
        await auth.identify("gw-secret")


async def test_forget_takes_effect_at_once_and_zero_disables_the_cache(db: Database) -> None:
    await add_key(db, "bot", "gw-secret")
    auth = Authenticator(db, Settings(upstream_api_key="sk-up", key_cache_seconds=5), clock=Clock())
    await auth.identify("gw-secret")
    await db.run(lambda c: revoke_key(c, "bot", time.time()))
    auth.forget(caller_identity("gw-secret"))
    with pytest.raises(AuthenticationFailed):
        await auth.identify("gw-secret")
    uncached = Authenticator(db, Settings(upstream_api_key="sk-up", key_cache_seconds=0))
    await add_key(db, "other", "gw-other")
    await uncached.identify("gw-other")
    await db.run(
        lambda c: c.execute(update(API_KEYS).where(API_KEYS.c.name == "other").values(revoked_at=1.0))
    )
    with pytest.raises(AuthenticationFailed):
        await uncached.identify("gw-other")


async def test_budget_counts_recorded_cost_of_the_key(db: Database) -> None:
    await add_key(db, "bot", "gw-secret", budget_pusd=100)
    auth = Authenticator(db, Settings(upstream_api_key="sk-up"))
    caller = await auth.identify("gw-secret")
    await auth.check_budget(caller)

    async def spend(owner: str, pusd: int | None) -> None:
        await db.run(
            lambda c: c.execute(
                insert(ATTEMPTS),
                [
                    {
                        "owner": owner,
                        "request_id": "r",
                        "endpoint": "/v1/chat/completions",
                        "status": 200,
                        "latency_ms": 1.0,
                        "cost_pusd": pusd,
                        "created_at": time.time(),
                    }
                ],
            )
        )

    await spend(caller.identity, 60)
    await spend(caller.identity, None)  # an unpriced call counts nothing
    await spend(caller_identity("gw-someone-else"), 1000)
    await auth.check_budget(caller)
    await spend(caller.identity, 40)
    with pytest.raises(BudgetExceeded) as caught:
        await auth.check_budget(caller)
    assert caught.value.status_code == 429 and caught.value.code == "budget_exceeded"


def test_admin_key_comparison() -> None:
    auth = Authenticator.__new__(Authenticator)
    auth.admin_key = "admin-123"
    assert auth.is_admin("admin-123") and not auth.is_admin("admin-12") and not auth.is_admin("")
    auth.admin_key = None
    assert not auth.is_admin("admin-123") and not auth.is_admin("")
