"""The SQL behind ``/sdapi/v1/progress``: an account's current generation."""

from __future__ import annotations

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.queue.models import Job, JobStatus

_ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.DELIVERING)


async def current_job(session: AsyncSession, account_id: str) -> Job | None:
    """The account's newest running generation, else its newest queued one."""
    return await _current(session, Job.account_id == account_id)


async def _current(session: AsyncSession, owner: ColumnElement[bool]) -> Job | None:
    running_first = case((Job.status.in_((JobStatus.RUNNING, JobStatus.DELIVERING)), 0), else_=1)
    stmt = (
        select(Job)
        .where(owner, Job.status.in_(_ACTIVE))
        .order_by(running_first, Job.created_at.desc(), Job.id.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalars().first()


async def active_count(session: AsyncSession, account_id: str) -> int:
    stmt = select(func.count()).select_from(Job).where(Job.account_id == account_id, Job.status.in_(_ACTIVE))
    return int((await session.execute(stmt)).scalar_one())


async def current_job_of_key(session: AsyncSession, key_id: str) -> Job | None:
    """The key's newest running generation, else its newest queued one: what A1111's interrupt stops."""
    return await _current(session, Job.api_key_id == key_id)
