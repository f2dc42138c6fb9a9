"""All SQL for plans, accounts and keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account, ApiKey, Plan
from app.queue.lifecycle import CANCELLABLE
from app.queue.models import Job


async def plan_by_code(session: AsyncSession, code: str) -> Plan | None:
    return (await session.execute(select(Plan).where(Plan.code == code))).scalar_one_or_none()


async def list_plans(session: AsyncSession) -> Sequence[Plan]:
    return (await session.execute(select(Plan).order_by(Plan.id))).scalars().all()


async def account_by_id(session: AsyncSession, account_id: str) -> Account | None:
    return await session.get(Account, account_id)


async def list_accounts(session: AsyncSession, *, limit: int, offset: int) -> Sequence[Account]:
    stmt = select(Account).order_by(Account.created_at, Account.id).limit(limit).offset(offset)
    return (await session.execute(stmt)).scalars().all()


async def key_by_prefix(session: AsyncSession, prefix: str) -> ApiKey | None:
    return (await session.execute(select(ApiKey).where(ApiKey.prefix == prefix))).scalar_one_or_none()


async def key_by_id(session: AsyncSession, key_id: str) -> ApiKey | None:
    return await session.get(ApiKey, key_id)


async def keys_of_account(session: AsyncSession, account_id: str) -> Sequence[ApiKey]:
    stmt = select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.created_at)
    return (await session.execute(stmt)).scalars().all()


async def revoke_key(session: AsyncSession, key_id: str, when: datetime) -> bool:
    """Marks the key revoked unless it already is; False when there was nothing to revoke."""
    stmt = (
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=when)
        .returning(ApiKey.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def any_admin_key(session: AsyncSession) -> bool:
    keys = (await session.execute(select(ApiKey.scopes).where(ApiKey.revoked_at.is_(None)))).scalars()
    return any("admin" in scopes for scopes in keys)


async def unfinished_job_ids(session: AsyncSession, *, account_id: str | None = None,
                             api_key_id: str | None = None) -> list[str]:
    """Jobs of the account (or of the key) not yet settled: queued, running or delivering."""
    stmt = select(Job.id).where(Job.status.in_([s.value for s in CANCELLABLE])).order_by(Job.created_at, Job.id)
    if account_id is not None:
        stmt = stmt.where(Job.account_id == account_id)
    if api_key_id is not None:
        stmt = stmt.where(Job.api_key_id == api_key_id)
    return list((await session.execute(stmt)).scalars().all())


async def search_accounts(session: AsyncSession, *, query: str | None, status: str | None, plan_code: str | None,
                          limit: int, offset: int) -> Sequence[Account]:
    """Accounts whose id or name contains ``query`` (any case), oldest first, optionally of one status and plan."""
    stmt = select(Account)
    if query:
        needle = query.lower()
        stmt = stmt.where(or_(func.lower(Account.name).contains(needle, autoescape=True),
                              func.lower(Account.id).contains(needle, autoescape=True)))
    if status is not None:
        stmt = stmt.where(Account.status == status)
    if plan_code is not None:
        stmt = stmt.where(Account.plan_id == select(Plan.id).where(Plan.code == plan_code).scalar_subquery())
    stmt = stmt.order_by(Account.created_at, Account.id).limit(limit).offset(offset)
    return (await session.execute(stmt)).scalars().all()


async def count_accounts_by_status(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(Account.status, func.count()).group_by(Account.status))
    return {status: int(n) for status, n in rows.tuples().all()}
