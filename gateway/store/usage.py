"""The request log: one row per upstream call, with its usage and cost."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.store.tables import Attempt


async def record_attempt(session: AsyncSession, values: dict[str, Any]) -> None:
    """Insert one request-log row (the caller's transaction decides when it commits)."""
    await session.execute(insert(Attempt), [values])
