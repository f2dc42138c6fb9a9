"""All SQL of licensing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import dialect_insert
from app.licensing.models import License, LicenseLock, LicenseReport, LicenseUsageDaily, RevenueEntry
from app.metering.models import UsageEntry
from app.queue.models import Job, JobStatus


async def current_version(session: AsyncSession, license_id: str, at: datetime) -> License | None:
    stmt = (select(License).where(License.id == license_id, License.effective_from <= at)
            .order_by(License.version.desc()).limit(1))
    return (await session.execute(stmt)).scalar_one_or_none()


async def latest_version(session: AsyncSession, license_id: str) -> License | None:
    stmt = select(License).where(License.id == license_id).order_by(License.version.desc()).limit(1)
    return (await session.execute(stmt)).scalar_one_or_none()


async def license_ids(session: AsyncSession) -> list[str]:
    return list((await session.execute(select(License.id).distinct().order_by(License.id))).scalars())


async def add_version(session: AsyncSession, row: License) -> None:
    session.add(row)
    await session.flush()


async def lock(session: AsyncSession, license_id: str) -> None:
    """Takes the licence's lock row (creating it on first use) until the transaction ends."""
    insert = dialect_insert(session)
    await session.execute(insert(LicenseLock).values(license_id=license_id).on_conflict_do_nothing())
    await session.execute(select(LicenseLock.license_id).where(LicenseLock.license_id == license_id)
                          .with_for_update())


async def window_totals(session: AsyncSession, license_id: str, start: date, end: date) -> tuple[int, int, int]:
    """(used, reserved, overage) for days in [start, end]."""
    stmt = select(func.coalesce(func.sum(LicenseUsageDaily.used), 0),
                  func.coalesce(func.sum(LicenseUsageDaily.reserved), 0),
                  func.coalesce(func.sum(LicenseUsageDaily.overage), 0)).where(
        LicenseUsageDaily.license_id == license_id, LicenseUsageDaily.day >= start, LicenseUsageDaily.day <= end)
    used, reserved, overage = (await session.execute(stmt)).one()
    return int(used), int(reserved), int(overage)


async def add_reserved(session: AsyncSession, license_id: str, day: date, n: int) -> None:
    insert = dialect_insert(session)
    stmt = insert(LicenseUsageDaily).values(license_id=license_id, day=day, used=0, reserved=n, overage=0)
    await session.execute(stmt.on_conflict_do_update(
        index_elements=[LicenseUsageDaily.license_id, LicenseUsageDaily.day],
        set_={"reserved": LicenseUsageDaily.reserved + n},
    ))


async def add_used(session: AsyncSession, license_id: str, day: date, n: int, *, overage: bool) -> None:
    """Counts ``n`` images delivered outside any reservation (a withheld image released by review)."""
    insert = dialect_insert(session)
    stmt = insert(LicenseUsageDaily).values(license_id=license_id, day=day, used=n, reserved=0,
                                            overage=n if overage else 0)
    await session.execute(stmt.on_conflict_do_update(
        index_elements=[LicenseUsageDaily.license_id, LicenseUsageDaily.day],
        set_={"used": LicenseUsageDaily.used + n, "overage": LicenseUsageDaily.overage + (n if overage else 0)},
    ))


async def settle(session: AsyncSession, license_id: str, day: date, *, reserved: int, used: int, overage: int
                 ) -> None:
    await session.execute(
        update(LicenseUsageDaily).where(LicenseUsageDaily.license_id == license_id, LicenseUsageDaily.day == day)
        .values(reserved=LicenseUsageDaily.reserved - reserved, used=LicenseUsageDaily.used + used,
                overage=LicenseUsageDaily.overage + overage)
        .execution_options(synchronize_session=False)
    )


async def revenue_since(session: AsyncSession, since: datetime) -> Decimal:
    stmt = select(func.coalesce(func.sum(RevenueEntry.amount_usd), 0)).where(RevenueEntry.occurred_at >= since)
    return Decimal(str((await session.execute(stmt)).scalar_one()))


async def add_revenue(session: AsyncSession, entry: RevenueEntry) -> RevenueEntry:
    """Idempotent on ``reference``: recording the same payment twice keeps the first row."""
    if entry.reference is not None:
        existing = (await session.execute(select(RevenueEntry).where(RevenueEntry.reference == entry.reference))
                    ).scalar_one_or_none()
        if existing is not None:
            return existing
    session.add(entry)
    await session.flush()
    return entry


async def ledger_month(session: AsyncSession, start: datetime, end: datetime) -> Sequence[Any]:
    """Images per (licence, model, UTC day, paid plan?, overage?) for ledger rows counted in days
    [start, end): the day an image counts in is its reservation's, as on the licence counters."""
    stmt = (
        select(UsageEntry.license, UsageEntry.model, UsageEntry.usage_day.label("day"), UsageEntry.plan_paid,
               UsageEntry.license_overage, func.sum(UsageEntry.images).label("images"))
        .where(UsageEntry.usage_day >= start.date(), UsageEntry.usage_day < end.date())
        .group_by(UsageEntry.license, UsageEntry.model, UsageEntry.usage_day, UsageEntry.plan_paid,
                  UsageEntry.license_overage)
    )
    return (await session.execute(stmt)).all()


async def lora_ledger_month(session: AsyncSession, start: datetime, end: datetime) -> Sequence[Any]:
    """Images per (job's LoRA set, paid plan?) for ledger rows counted in days [start, end): the LoRA set is
    the job's as stored at enqueue (``jobs.loras``, each entry naming its licence)."""
    stmt = (
        select(Job.loras, UsageEntry.plan_paid, func.sum(UsageEntry.images).label("images"))
        .join(Job, Job.id == UsageEntry.job_id)
        .where(UsageEntry.usage_day >= start.date(), UsageEntry.usage_day < end.date(), Job.loras.is_not(None))
        # By the job's key, not its JSON (Postgres has no equality on json): loras depends on the key.
        .group_by(Job.id, UsageEntry.plan_paid)
    )
    return (await session.execute(stmt)).all()


async def fallbacks_month(session: AsyncSession, start: datetime, end: datetime) -> dict[str, int]:
    """Jobs routed away from each licence's model to a fallback, by the licence they fell back from."""
    stmt = (select(Job.requested_license, func.count()).where(
        Job.requested_license.is_not(None), Job.status == JobStatus.SUCCEEDED, Job.created_at >= start,
        Job.created_at < end).group_by(Job.requested_license))
    return {str(lic): int(n) for lic, n in (await session.execute(stmt)).all()}


async def frozen_report(session: AsyncSession, month: str) -> LicenseReport | None:
    return await session.get(LicenseReport, month)


async def freeze_report(session: AsyncSession, report: LicenseReport) -> LicenseReport:
    """Stores the report unless another request froze it first; returns the stored one."""
    insert = dialect_insert(session)
    await session.execute(insert(LicenseReport).values(month=report.month, body=report.body, checksum=report.checksum,
                                                       frozen_at=report.frozen_at).on_conflict_do_nothing())
    stored = await session.get(LicenseReport, report.month, populate_existing=True)
    assert stored is not None
    return stored


async def frozen_reports(session: AsyncSession, limit: int) -> Sequence[LicenseReport]:
    """Frozen monthly reports, newest month first."""
    stmt = select(LicenseReport).order_by(LicenseReport.month.desc()).limit(limit)
    return (await session.execute(stmt)).scalars().all()
