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

from sqlalchemy import ColumnElement, Date, and_, bindparam, delete, or_, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import UTCDateTime, dialect_insert
from app.queue.models import Job, JobStatus
from app.quotas.models import IdempotencyRecord, QuotaCounter, RateLimitState

CounterKey = tuple[str, str, str, date]  # (scope, scope_id, period, period_start)


def _pk(key: CounterKey) -> list[ColumnElement[bool]]:
    scope, scope_id, period, start = key
    return [QuotaCounter.scope == scope, QuotaCounter.scope_id == scope_id, QuotaCounter.period == period,
            QuotaCounter.period_start == start]


# One constant statement (4 rows: account and key × day and month), so SQLAlchemy compiles it
# once; building it per request cost more than the database did. Postgres and SQLite share the
# syntax (ON CONFLICT … DO UPDATE … WHERE, excluded.*, RETURNING).
_RESERVE_ALL = text(
    "INSERT INTO quota_counters (scope, scope_id, period, period_start, used, reserved, cap, updated_at) VALUES "
    + ", ".join(f"(:s{i}, :i{i}, :p{i}, :d{i}, 0, :n, :c{i}, :u)" for i in range(4))
    + " ON CONFLICT (scope, scope_id, period, period_start) DO UPDATE SET"
    " reserved = quota_counters.reserved + excluded.reserved, cap = excluded.cap, updated_at = excluded.updated_at"
    " WHERE excluded.cap IS NULL OR quota_counters.used + quota_counters.reserved + excluded.reserved <= excluded.cap"
    " RETURNING scope, scope_id, period, period_start"
).bindparams(bindparam("u", type_=UTCDateTime()), *(bindparam(f"d{i}", type_=Date()) for i in range(4)))


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
    assert len(wanted) == 4
    params: dict[str, object] = {"n": n, "u": now}
    for i, ((scope, scope_id, period, start), limit) in enumerate(wanted):
        params.update({f"s{i}": scope, f"i{i}": scope_id, f"p{i}": period, f"d{i}": start, f"c{i}": limit})
    rows = (await session.execute(_RESERVE_ALL, params)).all()
    return {(r[0], r[1], r[2], r[3] if isinstance(r[3], date) else date.fromisoformat(str(r[3]))) for r in rows}


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


_INFLIGHT = """SELECT status, count(*) FROM jobs
WHERE api_key_id = (SELECT id FROM api_keys WHERE id = :k{lock}) AND status IN ('queued', 'running')
GROUP BY status"""
# Postgres: the sub-select takes the key's row lock, serialising one key's enqueues so in-flight
# counts cannot be raced past their limits — lock and count in one round trip. SQLite has one
# writer at a time anyway.
_INFLIGHT_PG = text(_INFLIGHT.format(lock=" FOR UPDATE"))
_INFLIGHT_SQLITE = text(_INFLIGHT.format(lock=""))


async def lock_key_and_count_inflight(session: AsyncSession, key_id: str) -> tuple[int, int]:
    """Locks the key row (Postgres) and returns its (queued, running) job counts."""
    stmt = _INFLIGHT_PG if session.get_bind().dialect.name == "postgresql" else _INFLIGHT_SQLITE
    counts = {status: int(n) for status, n in (await session.execute(stmt, {"k": key_id})).all()}
    return counts.get(JobStatus.QUEUED, 0), counts.get(JobStatus.RUNNING, 0)


_GCRA = """INSERT INTO rate_limit_state (api_key_id, tat) VALUES (:k, :now + :interval)
ON CONFLICT (api_key_id) DO UPDATE SET tat = {greatest}(rate_limit_state.tat, :now) + :interval
WHERE {greatest}(rate_limit_state.tat, :now) - :now <= :tolerance
RETURNING tat"""
_GCRA_PG = text(_GCRA.format(greatest="GREATEST"))
_GCRA_SQLITE = text(_GCRA.format(greatest="MAX"))


async def gcra_take(session: AsyncSession, key_id: str, *, now: float, interval: float, tolerance: float
                    ) -> tuple[bool, float]:
    """One GCRA step in one upsert: (allowed, theoretical arrival time after this request)."""
    stmt = _GCRA_PG if session.get_bind().dialect.name == "postgresql" else _GCRA_SQLITE
    params = {"k": key_id, "now": now, "interval": interval, "tolerance": tolerance}
    tat = (await session.execute(stmt, params)).scalar_one_or_none()
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
