"""All SQL of quotas, rate limits and idempotency records.

Counter changes are single conditional statements (``UPDATE … WHERE used + reserved
+ :n <= :limit RETURNING``): under READ COMMITTED a concurrent writer waits for the
row lock and re-checks the condition against the committed row, so no interleaving
can overshoot a limit. Callers touch counters in one fixed order (sorted keys) so
two transactions never wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import ColumnElement, and_, delete, func, literal, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import ApiKey
from app.db import dialect_insert
from app.queue.models import Job, JobStatus
from app.quotas.models import IdempotencyRecord, QuotaCounter, RateLimitState

CounterKey = tuple[str, str, str, date]  # (scope, scope_id, period, period_start)


def _pk(key: CounterKey) -> list[ColumnElement[bool]]:
    scope, scope_id, period, start = key
    return [QuotaCounter.scope == scope, QuotaCounter.scope_id == scope_id, QuotaCounter.period == period,
            QuotaCounter.period_start == start]


async def try_reserve_all(
    session: AsyncSession, wanted: Sequence[tuple[CounterKey, int | None]], n: int, now: datetime
) -> set[CounterKey]:
    """Reserves ``n`` on every counter in one statement; returns the counters that took it.

    An upsert per row: a missing counter is created holding ``n`` (callers check
    ``n <= limit`` first), an existing one is bumped only while ``used + reserved + n``
    stays within its limit. Rows are written in the given (sorted) order, which is the
    lock order. Fewer rows back than asked means a limit was hit: the caller raises and
    the transaction's rollback undoes the rows that did take the reservation.
    """
    insert = dialect_insert(session)
    stmt = insert(QuotaCounter).values([
        {"scope": s, "scope_id": i, "period": p, "period_start": d, "used": 0, "reserved": n, "cap": limit,
         "updated_at": now}
        for (s, i, p, d), limit in wanted
    ])
    stmt = stmt.on_conflict_do_update(
        index_elements=[QuotaCounter.scope, QuotaCounter.scope_id, QuotaCounter.period, QuotaCounter.period_start],
        set_={"reserved": QuotaCounter.reserved + stmt.excluded.reserved, "cap": stmt.excluded.cap,
              "updated_at": stmt.excluded.updated_at},
        where=or_(stmt.excluded.cap.is_(None),
                  QuotaCounter.used + QuotaCounter.reserved + stmt.excluded.reserved <= stmt.excluded.cap),
    ).returning(QuotaCounter.scope, QuotaCounter.scope_id, QuotaCounter.period, QuotaCounter.period_start)
    return {(r[0], r[1], r[2], r[3]) for r in (await session.execute(stmt)).all()}


async def settle(session: AsyncSession, key: CounterKey, *, reserved: int, used: int, now: datetime) -> None:
    """Moves ``reserved`` images out of the reservation, ``used`` of them into usage."""
    await session.execute(
        update(QuotaCounter).where(*_pk(key))
        .values(reserved=QuotaCounter.reserved - reserved, used=QuotaCounter.used + used, updated_at=now)
        .execution_options(synchronize_session=False)
    )


async def counters(session: AsyncSession, keys: Sequence[CounterKey]) -> dict[CounterKey, QuotaCounter]:
    stmt = select(QuotaCounter).where(
        tuple_(QuotaCounter.scope, QuotaCounter.scope_id, QuotaCounter.period, QuotaCounter.period_start).in_(keys)
    )
    found = (await session.execute(stmt)).scalars().all()
    return {(c.scope, c.scope_id, c.period, c.period_start): c for c in found}


async def mark_reservation(session: AsyncSession, job_id: str, state: str) -> Job | None:
    """held → committed|released, once: returns the job only if this call made the transition."""
    stmt = (
        update(Job).where(Job.id == job_id, Job.reservation_state == "held")
        .values(reservation_state=state).returning(Job).execution_options(synchronize_session=False)
    )
    return (await session.execute(stmt)).scalars().first()


async def lock_key(session: AsyncSession, key_id: str) -> None:
    """Serialises one key's enqueues so in-flight counts cannot be raced past their limits."""
    await session.execute(select(ApiKey.id).where(ApiKey.id == key_id).with_for_update())


async def inflight_counts(session: AsyncSession, key_id: str) -> tuple[int, int]:
    """(queued, running) jobs of the key."""
    stmt = (
        select(Job.status, func.count()).where(Job.api_key_id == key_id,
                                               Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
        .group_by(Job.status)
    )
    counts = dict((await session.execute(stmt)).all())
    return int(counts.get(JobStatus.QUEUED, 0)), int(counts.get(JobStatus.RUNNING, 0))


async def gcra_take(session: AsyncSession, key_id: str, *, now: float, interval: float, tolerance: float
                    ) -> tuple[bool, float]:
    """One GCRA step: (allowed, theoretical arrival time after this request)."""
    insert = dialect_insert(session)
    greatest = func.greatest if session.get_bind().dialect.name == "postgresql" else func.max
    current = greatest(RateLimitState.tat, literal(now))
    stmt = (
        insert(RateLimitState).values(api_key_id=key_id, tat=now + interval)
        .on_conflict_do_update(index_elements=[RateLimitState.api_key_id], set_={"tat": current + interval},
                               where=current - now <= tolerance)
        .returning(RateLimitState.tat)
    )
    tat = (await session.execute(stmt)).scalar_one_or_none()
    if tat is not None:
        return True, float(tat)
    stored = (await session.execute(select(RateLimitState.tat).where(RateLimitState.api_key_id == key_id))).scalar_one()
    return False, float(stored)


async def claim_idempotency(session: AsyncSession, record: IdempotencyRecord, now: datetime, *,
                            stale_accepting_before: datetime) -> IdempotencyRecord | None:
    """Inserts the record; if one already exists (and is live) returns it instead.

    An expired record, or one stuck in "accepting" because its process died mid-request,
    is replaced rather than blocking retries forever.
    """
    await session.execute(delete(IdempotencyRecord).where(
        IdempotencyRecord.api_key_id == record.api_key_id, IdempotencyRecord.key == record.key,
        or_(IdempotencyRecord.expires_at < now,
            and_(IdempotencyRecord.state == "accepting", IdempotencyRecord.created_at < stale_accepting_before)),
    ))
    insert = dialect_insert(session)
    values = {c.name: getattr(record, c.name) for c in IdempotencyRecord.__table__.columns}
    inserted = await session.execute(
        insert(IdempotencyRecord).values(values).on_conflict_do_nothing().returning(IdempotencyRecord.key)
    )
    if inserted.first() is not None:
        return None
    stmt = select(IdempotencyRecord).where(IdempotencyRecord.api_key_id == record.api_key_id,
                                           IdempotencyRecord.key == record.key)
    return (await session.execute(stmt)).scalar_one()


async def accept_idempotency(session: AsyncSession, key_id: str, key: str, job_id: str) -> None:
    await session.execute(
        update(IdempotencyRecord).where(IdempotencyRecord.api_key_id == key_id, IdempotencyRecord.key == key)
        .values(state="accepted", job_id=job_id).execution_options(synchronize_session=False)
    )


async def forget_idempotency(session: AsyncSession, key_id: str, key: str) -> None:
    await session.execute(delete(IdempotencyRecord).where(
        and_(IdempotencyRecord.api_key_id == key_id, IdempotencyRecord.key == key,
             IdempotencyRecord.state == "accepting")
    ))


async def purge_expired_idempotency(session: AsyncSession, now: datetime) -> int:
    result = await session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at < now))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
