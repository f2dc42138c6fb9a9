"""Aggregates over the daily rollup, for admins' usage reports."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.metering.models import UsageEntry
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


def _totals() -> tuple[Any, ...]:
    return (func.sum(UsageDaily.images).label("images"),
            func.sum(UsageDaily.megapixel_steps).label("megapixel_steps"),
            func.sum(UsageDaily.gpu_seconds).label("gpu_seconds"),
            func.sum(UsageDaily.price_units).label("price_units"))


async def aggregate_for_account(session: AsyncSession, account_id: str, group_by: GroupBy, start: date, end: date
                                ) -> Sequence[Any]:
    """What :func:`aggregate` gives, for one account's usage only."""
    column = _COLUMNS[group_by]
    images = func.sum(UsageDaily.images)
    stmt = (
        select(column.label("group"), *_totals())
        .where(UsageDaily.account_id == account_id, UsageDaily.day >= start, UsageDaily.day <= end)
        .group_by(column)
        .order_by(column if group_by == "day" else images.desc(), column)
    )
    return (await session.execute(stmt)).all()


async def aggregate_by_plan(session: AsyncSession, start: date, end: date) -> Sequence[Any]:
    """Totals per plan for days in [start, end], largest first, with the columns of :func:`aggregate`.

    From the ledger rather than the rollup: an image counts under the plan its account was on when
    it was made (``plan_code`` at generation time), which the rollup does not keep.
    """
    images = func.sum(UsageEntry.images)
    group = func.coalesce(UsageEntry.plan_code, "(none)")
    stmt = (
        select(group.label("group"), images.label("images"),
               func.sum(UsageEntry.megapixel_steps).label("megapixel_steps"),
               func.sum(UsageEntry.gpu_seconds).label("gpu_seconds"),
               func.sum(UsageEntry.price_units).label("price_units"))
        .where(UsageEntry.usage_day >= start, UsageEntry.usage_day <= end)
        .group_by(group)
        .order_by(images.desc(), group)
    )
    return (await session.execute(stmt)).all()


@dataclass(frozen=True)
class ReportRow:
    """One group of a usage report, rounded as GET /admin/usage reports it."""

    group: str
    images: int
    megapixel_steps: float
    gpu_seconds: float
    price_units: int


def report_rows(rows: Iterable[Any]) -> list[ReportRow]:
    return [ReportRow(group=str(r.group), images=int(r.images), megapixel_steps=round(float(r.megapixel_steps), 6),
                      gpu_seconds=round(float(r.gpu_seconds), 6), price_units=int(r.price_units)) for r in rows]


def report_csv(group_by: str, rows: Iterable[ReportRow]) -> str:
    """The CSV GET /admin/usage answers with ``Accept: text/csv``: a header naming the grouping, a line a group."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([group_by, "images", "megapixel_steps", "gpu_seconds", "price_units"])
    for row in rows:
        writer.writerow([row.group, row.images, row.megapixel_steps, row.gpu_seconds, row.price_units])
    return buf.getvalue()
