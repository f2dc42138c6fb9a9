"""SQL of the admin views that span every account: the job search, the queue's head, console sign-outs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import dialect_insert
from app.kit.meta import SystemMeta
from app.queue.models import Job, JobStatus


async def search_jobs(session: AsyncSession, *, account_id: str | None, statuses: Sequence[str] | None,
                      limit: int, offset: int) -> Sequence[Job]:
    """Jobs of every account (or one), newest first, erased ones included: an admin looks for what happened."""
    stmt = select(Job)
    if account_id is not None:
        stmt = stmt.where(Job.account_id == account_id)
    if statuses is not None:
        stmt = stmt.where(Job.status.in_(statuses))
    stmt = stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit).offset(offset)
    return (await session.execute(stmt)).scalars().all()


async def oldest_queued_job(session: AsyncSession) -> Job | None:
    stmt = select(Job).where(Job.status == JobStatus.QUEUED).order_by(Job.created_at, Job.id).limit(1)
    return (await session.execute(stmt)).scalar_one_or_none()


def _sign_out_key(key_id: str) -> str:
    return f"console_signed_out:{key_id}"


async def console_signed_out_at(session: AsyncSession, key_id: str) -> datetime | None:
    row = await session.get(SystemMeta, _sign_out_key(key_id), populate_existing=True)
    return datetime.fromisoformat(row.value) if row is not None else None


async def set_console_signed_out(session: AsyncSession, key_id: str, when: datetime) -> None:
    insert = dialect_insert(session)
    stmt = insert(SystemMeta).values(key=_sign_out_key(key_id), value=when.isoformat())
    await session.execute(stmt.on_conflict_do_update(index_elements=[SystemMeta.key], set_={"value": when.isoformat()}))
