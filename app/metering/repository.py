"""Writes to the usage ledger. Append only: the application never updates or deletes a row."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.metering.models import UsageEntry


async def append(session: AsyncSession, entries: Sequence[UsageEntry]) -> None:
    session.add_all(entries)
    await session.flush()


async def entries_for_job(session: AsyncSession, job_id: str) -> Sequence[UsageEntry]:
    stmt = select(UsageEntry).where(UsageEntry.job_id == job_id).order_by(UsageEntry.id)
    return (await session.execute(stmt)).scalars().all()


async def count_for_job(session: AsyncSession, job_id: str) -> int:
    stmt = select(func.count()).select_from(UsageEntry).where(UsageEntry.job_id == job_id)
    return int((await session.execute(stmt)).scalar_one())
