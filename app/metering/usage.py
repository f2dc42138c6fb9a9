"""Aggregates over the daily rollup, for admins' usage reports."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.metering.rollup import UsageDaily

GroupBy = Literal["account", "key", "model", "day"]
_COLUMNS = {"account": UsageDaily.account_id, "key": UsageDaily.api_key_id, "model": UsageDaily.model,
            "day": UsageDaily.day}


async def aggregate(session: AsyncSession, group_by: GroupBy, start: date, end: date) -> Sequence[Any]:
    """Totals per group for days in [start, end] (inclusive), largest first (days in order)."""
    column = _COLUMNS[group_by]
    images = func.sum(UsageDaily.images)
    stmt = (
        select(column.label("group"), images.label("images"),
               func.sum(UsageDaily.megapixel_steps).label("megapixel_steps"),
               func.sum(UsageDaily.gpu_seconds).label("gpu_seconds"),
               func.sum(UsageDaily.price_units).label("price_units"))
        .where(UsageDaily.day >= start, UsageDaily.day <= end)
        .group_by(column)
        .order_by(column if group_by == "day" else images.desc(), column)
    )
    return (await session.execute(stmt)).all()
