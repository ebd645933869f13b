"""Key budgets while calls run: each call reserves what it may cost, so concurrent calls see each other.

A call of a key with a budget reserves, before the upstream call, the price of its prompt (counted
offline) plus its completion allowance (see estimates.py). The reservation row lives in the database,
so every replica sees it; it is deleted in the transaction that records the call's real (or estimated)
cost, and it lapses by itself after RESERVATION_SECONDS should its process die first. A call is
admitted while the key's recorded cost plus its live reservations is below the budget, checked and
reserved under one per-key lock, so the admitted calls overspend by at most the last call's worth (and
by what a reply costs beyond its reservation: a call without a completion limit that produces more than
the default allowance).
"""

from __future__ import annotations

import functools
import time

from gateway.errors import BudgetExceeded
from gateway.money import to_picodollars, usd, usd_text
from gateway.pricing import Pricer, Usage
from gateway.store.database import Database
from gateway.store.spend import reserve_budget

RESERVATION_SECONDS = 3600.0


def budget_spent(key_name: str | None, budget_pusd: int) -> BudgetExceeded:
    """The 429 of a key whose budget is spent (or reserved by its calls in flight)."""
    return BudgetExceeded(
        f"The key '{key_name}' has spent its budget of {usd_text(usd(budget_pusd))} USD; "
        "ask the gateway's operator for a new key or a larger budget."
    )


class Budgets:
    """Reserves a call's estimated cost against its key's budget."""

    def __init__(self, db: Database, pricer: Pricer) -> None:
        self.db = db
        self.pricer = pricer

    async def reserve(
        self, owner: str, key_name: str | None, budget_pusd: int | None, model: str | None, usage: Usage
    ) -> int | None:
        """Reserve the price of `usage` for one call; its reservation id (None: no budget). 429 when spent."""
        if budget_pusd is None:
            return None
        pusd = to_picodollars(self.pricer.cost(model, usage, 0).cost_usd) or 0
        unit = functools.partial(
            reserve_budget,
            owner=owner,
            budget_pusd=budget_pusd,
            pusd=pusd,
            now=time.time(),
            lifetime=RESERVATION_SECONDS,
        )
        reservation = await self.db.run(unit)
        if reservation is None:
            raise budget_spent(key_name, budget_pusd)
        return reservation
