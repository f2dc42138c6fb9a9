"""Quota periods are UTC calendar days and months, checked at their boundaries."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import pytest

from app.accounts import service as accounts
from app.db import Database
from app.errors import QuotaExceeded
from app.kit.ids import new_id
from app.queue.models import Job
from app.quotas import service as quotas
from app.quotas.periods import next_day, next_month


def test_period_boundaries() -> None:
    assert next_day(date(2026, 2, 28)) == datetime(2026, 3, 1, tzinfo=UTC)
    assert next_month(date(2026, 12, 1)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert next_month(date(2028, 2, 1)) == datetime(2028, 3, 1, tzinfo=UTC)


def _job(account_id: str, key_id: str, n: int) -> Job:
    return Job(id=new_id("gen"), account_id=account_id, api_key_id=key_id, n=n)


async def _scenario(url: str) -> None:
    db = Database(url, pool_size=1)
    try:
        async with db.unit_of_work() as s:
            plan = await accounts.create_plan(s, {"code": f"p{new_id('x')[-6:]}", "name": "p", "daily_image_quota": 2,
                                                  "monthly_image_quota": 3, "max_width": 512, "max_height": 512,
                                                  "max_steps": 10, "max_n": 4, "priority": 0})
            account = await accounts.create_account(s, name="periods", plan_code=plan.code)
            key, _ = await accounts.create_key(s, account_id=account.id)

        async def reserve(n: int, at: datetime) -> Job:
            async with db.unit_of_work() as s:
                job = _job(account.id, key.id, n)
                await quotas.reserve(s, account, key, job, at)
                return job

        last_second = datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)
        await reserve(2, last_second)
        with pytest.raises(QuotaExceeded) as daily:
            await reserve(1, last_second)
        assert daily.value.code == "daily_quota_exceeded"
        assert daily.value.extra["resets_at"] == "2026-02-01T00:00:00+00:00"

        # One second later it is a new day and a new month: both counters start from zero.
        first_second = datetime(2026, 2, 1, 0, 0, 0, tzinfo=UTC)
        job = await reserve(2, first_second)
        assert (job.quota_day, job.quota_month) == (date(2026, 2, 1), date(2026, 2, 1))

        # The next day, the daily quota is fresh but the month has only 1 of 3 left.
        with pytest.raises(QuotaExceeded) as monthly:
            await reserve(2, datetime(2026, 2, 2, 12, tzinfo=UTC))
        assert monthly.value.code == "monthly_quota_exceeded"
        assert monthly.value.extra["resets_at"] == "2026-03-01T00:00:00+00:00"
        await reserve(1, datetime(2026, 2, 2, 12, tzinfo=UTC))
    finally:
        await db.dispose()


@pytest.mark.parametrize("dialect", ["postgres", "sqlite"])
def test_reservations_roll_over_at_utc_midnight_and_month_start(dialect, pg_factory, tmp_path) -> None:
    if dialect == "postgres":
        url = pg_factory()
    else:
        from app.migrate import upgrade_head

        url = f"sqlite+aiosqlite:///{tmp_path / 'q.db'}"
        upgrade_head(url)
    asyncio.run(_scenario(url))
