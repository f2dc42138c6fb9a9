"""All SQL of moderation: incidents and strikes, the opt-out registry, reviews, the audit log."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import BigInteger, String, cast, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.db import dialect_insert
from app.kit.meta import SystemMeta
from app.moderation.models import ArtistOptOut, ModerationAuditEntry, ModerationIncident, ModerationReview
from app.queue.models import JobOutput

OPTOUT_REVISION_KEY = "moderation.optouts_revision"

# -- incidents and strikes -----------------------------------------------------------------


async def add(session: AsyncSession, row: object) -> None:
    session.add(row)
    await session.flush()


async def lock_account(session: AsyncSession, account_id: str) -> None:
    """Serialises strike counting per account, so concurrent blocks cannot both miss the threshold."""
    await session.execute(select(Account.id).where(Account.id == account_id).with_for_update())


async def count_strikes(session: AsyncSession, account_id: str, since: datetime) -> int:
    stmt = select(func.count()).select_from(ModerationIncident).where(
        ModerationIncident.account_id == account_id, ModerationIncident.strike.is_(True),
        ModerationIncident.created_at >= since,
    )
    return int((await session.execute(stmt)).scalar_one())


async def suspend_account(session: AsyncSession, account_id: str) -> bool:
    """Active → suspended; False when it already was (only one request raises the alert)."""
    stmt = (
        update(Account).where(Account.id == account_id, Account.status == "active").values(status="suspended")
        .returning(Account.id).execution_options(synchronize_session=False)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def list_incidents(
    session: AsyncSession, *, category: str | None, account_id: str | None, api_key_id: str | None,
    since: datetime | None, limit: int, offset: int,
) -> Sequence[ModerationIncident]:
    stmt = select(ModerationIncident)
    if category is not None:
        stmt = stmt.where(ModerationIncident.category == category)
    if account_id is not None:
        stmt = stmt.where(ModerationIncident.account_id == account_id)
    if api_key_id is not None:
        stmt = stmt.where(ModerationIncident.api_key_id == api_key_id)
    if since is not None:
        stmt = stmt.where(ModerationIncident.created_at >= since)
    stmt = stmt.order_by(ModerationIncident.created_at.desc(), ModerationIncident.id.desc()).limit(limit)
    return (await session.execute(stmt.offset(offset))).scalars().all()


# -- opt-out registry ------------------------------------------------------------------------


async def optout_revision(session: AsyncSession) -> int:
    """The registry's change counter: one primary-key read, what every replica polls."""
    value = (await session.execute(
        select(SystemMeta.value).where(SystemMeta.key == OPTOUT_REVISION_KEY)
    )).scalar_one_or_none()
    return int(value) if value is not None else 0


async def bump_optout_revision(session: AsyncSession) -> int:
    """Increments the counter in the caller's transaction (its row lock orders concurrent changes)."""
    insert = dialect_insert(session)
    await session.execute(
        insert(SystemMeta).values(key=OPTOUT_REVISION_KEY, value="0").on_conflict_do_nothing(index_elements=["key"])
    )
    stmt = (
        update(SystemMeta).where(SystemMeta.key == OPTOUT_REVISION_KEY)
        .values(value=cast(cast(SystemMeta.value, BigInteger) + 1, String))
        .returning(SystemMeta.value).execution_options(synchronize_session=False)
    )
    return int((await session.execute(stmt)).scalar_one())


async def active_optouts(session: AsyncSession) -> Sequence[ArtistOptOut]:
    stmt = select(ArtistOptOut).where(ArtistOptOut.deleted_at.is_(None)).order_by(ArtistOptOut.id)
    return (await session.execute(stmt)).scalars().all()


async def list_optouts(session: AsyncSession, *, include_deleted: bool, limit: int, offset: int
                       ) -> Sequence[ArtistOptOut]:
    stmt = select(ArtistOptOut)
    if not include_deleted:
        stmt = stmt.where(ArtistOptOut.deleted_at.is_(None))
    stmt = stmt.order_by(ArtistOptOut.id).limit(limit).offset(offset)
    return (await session.execute(stmt)).scalars().all()


async def get_optout(session: AsyncSession, optout_id: int) -> ArtistOptOut | None:
    return await session.get(ArtistOptOut, optout_id)


async def soft_delete_optout(session: AsyncSession, optout_id: int, now: datetime) -> bool:
    stmt = (
        update(ArtistOptOut).where(ArtistOptOut.id == optout_id, ArtistOptOut.deleted_at.is_(None))
        .values(deleted_at=now, updated_at=now).returning(ArtistOptOut.id)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


# -- output review ---------------------------------------------------------------------------


async def review_settings(session: AsyncSession, account_ids: Sequence[str]) -> dict[str, tuple[str, float]]:
    """account id → (max_rating, review_threshold)."""
    stmt = select(Account.id, Account.max_rating, Account.review_threshold).where(Account.id.in_(account_ids))
    return {row.id: (row.max_rating, row.review_threshold) for row in (await session.execute(stmt)).all()}


async def list_reviews(session: AsyncSession, *, status: str | None, account_id: str | None, limit: int,
                       offset: int) -> Sequence[ModerationReview]:
    stmt = select(ModerationReview)
    if status is not None:
        stmt = stmt.where(ModerationReview.status == status)
    if account_id is not None:
        stmt = stmt.where(ModerationReview.account_id == account_id)
    # Oldest first: a review queue is worked from its head.
    stmt = stmt.order_by(ModerationReview.created_at, ModerationReview.id).limit(limit).offset(offset)
    return (await session.execute(stmt)).scalars().all()


async def review_for_update(session: AsyncSession, review_id: str) -> ModerationReview | None:
    stmt = select(ModerationReview).where(ModerationReview.id == review_id).with_for_update()
    return (await session.execute(stmt.execution_options(populate_existing=True))).scalar_one_or_none()


async def get_review(session: AsyncSession, review_id: str) -> ModerationReview | None:
    return await session.get(ModerationReview, review_id)


async def get_output(session: AsyncSession, image_id: str) -> JobOutput | None:
    return await session.get(JobOutput, image_id, populate_existing=True)


async def set_output_status(session: AsyncSession, image_id: str, status: str) -> None:
    await session.execute(
        update(JobOutput).where(JobOutput.id == image_id).values(status=status)
        .execution_options(synchronize_session=False)
    )


# -- audit log -------------------------------------------------------------------------------


async def list_audit(session: AsyncSession, *, action: str | None, target_type: str | None, target_id: str | None,
                     limit: int, offset: int) -> Sequence[ModerationAuditEntry]:
    stmt = select(ModerationAuditEntry)
    if action is not None:
        stmt = stmt.where(ModerationAuditEntry.action == action)
    if target_type is not None:
        stmt = stmt.where(ModerationAuditEntry.target_type == target_type)
    if target_id is not None:
        stmt = stmt.where(ModerationAuditEntry.target_id == target_id)
    stmt = stmt.order_by(ModerationAuditEntry.created_at.desc(), ModerationAuditEntry.id.desc())
    return (await session.execute(stmt.limit(limit).offset(offset))).scalars().all()


async def review_backlog(session: AsyncSession, status: str) -> tuple[int, datetime | None]:
    """How many reviews are in ``status`` and when the oldest of them was created."""
    stmt = select(func.count(), func.min(ModerationReview.created_at)).where(ModerationReview.status == status)
    count, oldest = (await session.execute(stmt)).one()
    return int(count), oldest


async def reviews_of_job(session: AsyncSession, job_id: str) -> Sequence[ModerationReview]:
    stmt = select(ModerationReview).where(ModerationReview.job_id == job_id).order_by(ModerationReview.created_at)
    return (await session.execute(stmt)).scalars().all()
