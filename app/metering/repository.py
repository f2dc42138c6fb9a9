"""Writes to the usage ledger. Append only: the application never updates or deletes a row."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.billing.outbox import enqueue_billable
from app.db import dialect_insert
from app.metering.models import UsageEntry
from app.metering.rollup import UsageDaily


async def append(session: AsyncSession, entries: Sequence[UsageEntry]) -> None:
    """Adds ledger rows, their billing-outbox rows (the billable ones) and folds them into the
    daily rollup, all in the caller's transaction: usage and its bill stand or fall together."""
    session.add_all(entries)
    await session.flush()
    await enqueue_billable(session, entries)
    totals: dict[tuple[date, str, str, str], dict[str, Any]] = {}
    for e in entries:
        k = (e.usage_day, e.account_id, e.api_key_id, e.model)
        t = totals.setdefault(k, {"day": k[0], "account_id": k[1], "api_key_id": k[2], "model": k[3],
                                  "license": e.license, "images": 0, "megapixel_steps": 0.0, "gpu_seconds": 0.0,
                                  "price_units": 0})
        t["images"] += e.images
        t["megapixel_steps"] += e.megapixel_steps
        t["gpu_seconds"] += e.gpu_seconds
        t["price_units"] += e.price_units
    if not totals:
        return
    insert = dialect_insert(session)
    for row in sorted(totals.values(), key=lambda r: (r["day"], r["account_id"], r["api_key_id"], r["model"])):
        stmt = insert(UsageDaily).values(row)
        await session.execute(stmt.on_conflict_do_update(
            index_elements=[UsageDaily.day, UsageDaily.account_id, UsageDaily.api_key_id, UsageDaily.model],
            set_={c: getattr(UsageDaily, c) + getattr(stmt.excluded, c)
                  for c in ("images", "megapixel_steps", "gpu_seconds", "price_units")},
        ))


async def entries_for_job(session: AsyncSession, job_id: str) -> Sequence[UsageEntry]:
    stmt = select(UsageEntry).where(UsageEntry.job_id == job_id).order_by(UsageEntry.id)
    return (await session.execute(stmt)).scalars().all()


async def count_for_job(session: AsyncSession, job_id: str) -> int:
    stmt = select(func.count()).select_from(UsageEntry).where(UsageEntry.job_id == job_id)
    return int((await session.execute(stmt)).scalar_one())
