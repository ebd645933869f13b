"""Recorded spend (sums of attempts.cost_pusd), for key budgets and conversation cost caps."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.store.tables import Attempt


async def caller_spent_pusd(session: AsyncSession, owner: str) -> int:
    """What one caller has spent, in picodollars (calls without a known price count 0)."""
    statement = select(func.coalesce(func.sum(Attempt.cost_pusd), 0)).where(Attempt.owner == owner)
    return int((await session.execute(statement)).scalar_one() or 0)


async def conversation_spent_pusd(session: AsyncSession, owner: str, conversation_id: str) -> int:
    """What the caller's current conversation with this id spent (a deleted namesake's calls don't count)."""
    statement = select(func.coalesce(func.sum(Attempt.cost_pusd), 0)).where(
        Attempt.owner == owner,
        Attempt.conversation_id == conversation_id,
        Attempt.conversation_deleted.is_(False),
    )
    return int((await session.execute(statement)).scalar_one() or 0)


async def spent_by_owners(session: AsyncSession, owners: Sequence[str]) -> dict[str, int]:
    """Spend per caller for several callers at once, in picodollars."""
    if not owners:
        return {}
    statement = (
        select(Attempt.owner, func.coalesce(func.sum(Attempt.cost_pusd), 0))
        .where(Attempt.owner.in_(list(owners)))
        .group_by(Attempt.owner)
    )
    return {owner: int(total or 0) for owner, total in (await session.execute(statement)).all()}
