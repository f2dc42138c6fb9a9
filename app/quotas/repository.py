"""All SQL of quotas, rate limits and idempotency records.

Counter changes are single conditional statements (``UPDATE … WHERE used + reserved
+ :n <= :limit RETURNING``): under READ COMMITTED a concurrent writer waits for the
row lock and re-checks the condition against the committed row, so no interleaving
can overshoot a limit. Callers touch counters in one fixed order (sorted keys) so
two transactions never wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import ColumnElement, Date, and_, bindparam, delete, or_, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import UTCDateTime, dialect_insert
from app.queue.models import Job, JobStatus
from app.quotas.models import IdempotencyRecord, QuotaCounter

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


async def add_used(session: AsyncSession, key: CounterKey, n: int, now: datetime) -> None:
    """Adds ``n`` to a counter's usage, creating the counter if it has none yet (no limit check)."""
    scope, scope_id, period, start = key
    insert = dialect_insert(session)
    stmt = insert(QuotaCounter).values(scope=scope, scope_id=scope_id, period=period, period_start=start, used=n,
                                       reserved=0, updated_at=now)
    await session.execute(stmt.on_conflict_do_update(
        index_elements=[QuotaCounter.scope, QuotaCounter.scope_id, QuotaCounter.period, QuotaCounter.period_start],
        set_={"used": QuotaCounter.used + n, "updated_at": now},
    ))


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


# Postgres: the key's row lock serialises one key's enqueues, so in-flight counts cannot be raced past
# their limits. It must be its own statement: under READ COMMITTED a statement reads the snapshot taken
# when it started, so a count in the statement that waited for the lock would miss the job the lock's
# previous holder just committed. SQLite: every transaction begins IMMEDIATE (app.db), holding the
# database's write lock, which serialises them all.
_LOCK_KEY = text("SELECT id FROM api_keys WHERE id = :k FOR UPDATE")
_COUNT_JOBS = text(
    "SELECT status, count(*) FROM jobs WHERE api_key_id = :k AND status IN :statuses GROUP BY status"
).bindparams(bindparam("statuses", expanding=True))


async def lock_key_and_count_jobs(session: AsyncSession, key_id: str, statuses: Sequence[JobStatus]
                                  ) -> dict[JobStatus, int]:
    """Locks the key row (Postgres) and returns its number of jobs in each of ``statuses``."""
    if _is_postgres(session):
        await session.execute(_LOCK_KEY, {"k": key_id})
    rows = (await session.execute(_COUNT_JOBS, {"k": key_id, "statuses": [s.value for s in statuses]})).all()
    counts = {JobStatus(status): int(n) for status, n in rows}
    return {status: counts.get(status, 0) for status in statuses}


# GCRA reads the time from the database, in epoch seconds, after it holds the key's row: a time taken
# before waiting for the lock is stale by the wait, and under contention that made requests far below
# the limit look early. Postgres evaluates the ON CONFLICT … DO UPDATE clauses once the conflicting
# row is locked, and clock_timestamp() (unlike now()) is the time of the call, not of the transaction's
# start. SQLite's transactions hold the write lock from BEGIN IMMEDIATE (app.db), before any statement
# runs; julianday('now') is fixed for the whole statement.
_PG_NOW = "extract(epoch FROM clock_timestamp())::float8"
_SQLITE_NOW = "((julianday('now') - 2440587.5) * 86400.0)"

# The row's tat is the theoretical arrival time of the next request; a request is early (refused) when
# tat lies more than the tolerance ahead of now. Admitted: tat moves one interval on from max(tat, now).
_GCRA = """INSERT INTO rate_limit_state (api_key_id, tat) VALUES (:k, {now} + :interval)
ON CONFLICT (api_key_id) DO UPDATE SET tat = {greatest}(rate_limit_state.tat, {now}) + :interval
WHERE rate_limit_state.tat - {now} <= :tolerance
RETURNING tat, {now}"""
_GCRA_PG = text(_GCRA.format(greatest="GREATEST", now=_PG_NOW))
_GCRA_SQLITE = text(_GCRA.format(greatest="MAX", now=_SQLITE_NOW))

# A refused upsert returns no row but leaves it locked (Postgres locks the conflicting row whether or
# not the DO UPDATE's WHERE holds; SQLite's transaction holds the write lock), so this reads the tat
# that refused the request, not an older one.
_GCRA_STATE = "SELECT tat, {now} FROM rate_limit_state WHERE api_key_id = :k"
_GCRA_STATE_PG = text(_GCRA_STATE.format(now=_PG_NOW))
_GCRA_STATE_SQLITE = text(_GCRA_STATE.format(now=_SQLITE_NOW))

# One request given back: tat moves one interval back, but never behind now: a bucket that refilled
# meanwhile is full and has no room for the token, and a bucket never holds more than its burst.
_GCRA_REFUND = """UPDATE rate_limit_state SET tat = {greatest}(tat - :interval, {now}) WHERE api_key_id = :k"""
_GCRA_REFUND_PG = text(_GCRA_REFUND.format(greatest="GREATEST", now=_PG_NOW))
_GCRA_REFUND_SQLITE = text(_GCRA_REFUND.format(greatest="MAX", now=_SQLITE_NOW))


def _is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


@dataclass(frozen=True)
class GcraStep:
    """The outcome of one GCRA step, with the database's clock reading it was decided on."""

    allowed: bool
    tat: float  # theoretical arrival time after this step (epoch seconds)
    now: float  # the database's time (epoch seconds)


async def gcra_take(session: AsyncSession, key_id: str, *, interval: float, tolerance: float) -> GcraStep:
    """One GCRA step in one upsert, timed by the database's clock once it holds the key's row."""
    pg = _is_postgres(session)
    params = {"k": key_id, "interval": interval, "tolerance": tolerance}
    row = (await session.execute(_GCRA_PG if pg else _GCRA_SQLITE, params)).first()
    if row is not None:
        return GcraStep(allowed=True, tat=float(row[0]), now=float(row[1]))
    tat, now = (await session.execute(_GCRA_STATE_PG if pg else _GCRA_STATE_SQLITE, {"k": key_id})).one()
    return GcraStep(allowed=False, tat=float(tat), now=float(now))


async def gcra_refund(session: AsyncSession, key_id: str, *, interval: float) -> None:
    """Gives one admitted request back to the key's bucket."""
    stmt = _GCRA_REFUND_PG if _is_postgres(session) else _GCRA_REFUND_SQLITE
    await session.execute(stmt, {"k": key_id, "interval": interval})


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
