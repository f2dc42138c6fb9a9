"""All SQL of billing: claiming and settling outbox rows, counters, webhook events, invoices.

Claiming is one ``UPDATE … WHERE usage_id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING``:
on Postgres concurrent reporters skip each other's rows; on SQLite the statement is the
transaction's first and only one, so it takes the single write lock before it reads and two
reporters can never claim the same row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Boolean, Table, and_, bindparam, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.accounts.models import Account
from app.billing.models import BillingCounter, BillingInvoice, BillingOutbox, OutboxStatus, WebhookEvent
from app.db import dialect_insert
from app.kit.meta import SystemMeta

_T = cast(Table, BillingOutbox.__table__)
_PENDING = OutboxStatus.PENDING.value


@dataclass(frozen=True)
class Claimed:
    usage_id: int
    account_id: str
    stripe_customer_id: str
    value: int
    occurred_at: datetime
    attempts: int
    claimed_at: datetime
    doubt_since: datetime | None


def _doubt() -> ColumnElement[Any]:
    """When the row's earliest unresolved attempt started, counting a claim whose holder vanished
    (claim token still set after its lease) as an attempt of unknown outcome."""
    return func.coalesce(BillingOutbox.doubt_since,
                         case((BillingOutbox.claim_token.is_not(None), BillingOutbox.claimed_at), else_=None))


def _unleased(now: datetime) -> ColumnElement[bool]:
    return or_(BillingOutbox.lease_until.is_(None), BillingOutbox.lease_until < now)


async def claim(session: AsyncSession, *, token: str, now: datetime, limit: int, lease_seconds: float,
                age_cutoff: datetime, dedup_cutoff: datetime) -> list[Claimed]:
    """Leases up to ``limit`` due rows that are still safe to send; the others wait for ``set_aside``."""
    doubt = _doubt()
    eligible = and_(BillingOutbox.status == _PENDING, BillingOutbox.next_attempt_at <= now, _unleased(now),
                    BillingOutbox.occurred_at >= age_cutoff, or_(doubt.is_(None), doubt >= dedup_cutoff))
    ids = (select(BillingOutbox.usage_id).where(eligible)
           .order_by(BillingOutbox.next_attempt_at, BillingOutbox.usage_id).limit(limit)
           .with_for_update(skip_locked=True))
    stmt = (
        update(BillingOutbox)
        .where(BillingOutbox.usage_id.in_(ids.scalar_subquery()), eligible)
        .values(doubt_since=doubt, claim_token=token, claimed_at=now,
                lease_until=now + timedelta(seconds=lease_seconds))
        .returning(BillingOutbox.usage_id, BillingOutbox.account_id, BillingOutbox.stripe_customer_id,
                   BillingOutbox.value, BillingOutbox.occurred_at, BillingOutbox.attempts, BillingOutbox.claimed_at,
                   BillingOutbox.doubt_since)
        .execution_options(synchronize_session=False)
    )
    rows = [Claimed(usage_id=r[0], account_id=r[1], stripe_customer_id=r[2], value=r[3], occurred_at=r[4],
                    attempts=r[5], claimed_at=now, doubt_since=r[7])
            for r in (await session.execute(stmt)).tuples().all()]
    rows.sort(key=lambda r: r.usage_id)
    return rows


async def set_aside(session: AsyncSession, *, now: datetime, age_cutoff: datetime, dedup_cutoff: datetime
                    ) -> tuple[int, int]:
    """Moves pending, unleased rows that can no longer be sent safely out of the queue.

    Too old for Stripe → ``expired``. An attempt of unknown outcome older than the de-duplication
    window → ``unconfirmed``. Returns (expired, unconfirmed).
    """
    doubt = _doubt()
    expired = await session.execute(
        update(BillingOutbox)
        .where(BillingOutbox.status == _PENDING, _unleased(now), BillingOutbox.occurred_at < age_cutoff)
        .values(status=OutboxStatus.EXPIRED.value, doubt_since=doubt, claim_token=None, lease_until=None,
                last_error="older than Stripe accepts (35 days) before it could be sent")
        .returning(BillingOutbox.usage_id).execution_options(synchronize_session=False))
    n_expired = len(expired.all())
    unconfirmed = await session.execute(
        update(BillingOutbox)
        .where(BillingOutbox.status == _PENDING, _unleased(now), doubt.is_not(None), doubt < dedup_cutoff)
        .values(status=OutboxStatus.UNCONFIRMED.value, doubt_since=doubt, claim_token=None, lease_until=None,
                last_error="an earlier attempt may have reached Stripe and its de-duplication window has passed")
        .returning(BillingOutbox.usage_id).execution_options(synchronize_session=False))
    return n_expired, len(unconfirmed.all())


async def mark_sent(session: AsyncSession, usage_ids: Sequence[int], now: datetime) -> int:
    """Stripe has these events. Not conditional on the claim: whoever learns it first records it."""
    if not usage_ids:
        return 0
    result = await session.execute(
        update(BillingOutbox)
        .where(BillingOutbox.usage_id.in_(usage_ids), BillingOutbox.status == _PENDING)
        .values(status=OutboxStatus.SENT.value, sent_at=now, attempts=BillingOutbox.attempts + 1,
                claim_token=None, lease_until=None, doubt_since=None, last_error=None)
        .returning(BillingOutbox.usage_id).execution_options(synchronize_session=False))
    return len(result.all())


async def mark_retry(session: AsyncSession, token: str, retries: Sequence[dict[str, Any]]) -> None:
    """Failed attempts to try again later. Each dict: usage_id, next_attempt_at, error, in_doubt."""
    if not retries:
        return
    in_doubt = bindparam("b_doubt", type_=Boolean)
    doubt = case((in_doubt, func.coalesce(_T.c.doubt_since, _T.c.claimed_at)), else_=_T.c.doubt_since)
    stmt = (
        update(_T)
        .where(_T.c.usage_id == bindparam("b_id"), _T.c.claim_token == token, _T.c.status == _PENDING)
        .values(attempts=_T.c.attempts + 1, failures=_T.c.failures + 1, next_attempt_at=bindparam("b_next"),
                last_error=bindparam("b_error"), doubt_since=doubt, claim_token=None, lease_until=None)
    )
    await session.execute(stmt, [{"b_id": r["usage_id"], "b_next": r["next_attempt_at"], "b_error": r["error"],
                                  "b_doubt": r["in_doubt"]} for r in retries])


async def mark_rejected(session: AsyncSession, token: str, rejected: Sequence[dict[str, Any]]) -> None:
    """Events Stripe refused outright: set aside as ``failed`` with Stripe's message."""
    if not rejected:
        return
    stmt = (
        update(_T)
        .where(_T.c.usage_id == bindparam("b_id"), _T.c.claim_token == token, _T.c.status == _PENDING)
        .values(status=OutboxStatus.FAILED.value, attempts=_T.c.attempts + 1, failures=_T.c.failures + 1,
                last_error=bindparam("b_error"), claim_token=None, lease_until=None)
    )
    await session.execute(stmt, [{"b_id": r["usage_id"], "b_error": r["error"]} for r in rejected])


async def release(session: AsyncSession, token: str, usage_ids: Sequence[int]) -> None:
    """Gives back claimed rows that were never attempted (Stripe looked down, or the lease ran short)."""
    if not usage_ids:
        return
    await session.execute(
        update(BillingOutbox)
        .where(BillingOutbox.usage_id.in_(usage_ids), BillingOutbox.claim_token == token,
               BillingOutbox.status == _PENDING)
        .values(claim_token=None, lease_until=None).execution_options(synchronize_session=False))


async def bump_counters(session: AsyncSession, **increments: int) -> None:
    insert_ = dialect_insert(session)
    for name, n in sorted(increments.items()):
        if n:
            stmt = insert_(BillingCounter).values(name=name, value=n)
            await session.execute(stmt.on_conflict_do_update(index_elements=[BillingCounter.name],
                                                             set_={"value": BillingCounter.value + n}))


async def counters(session: AsyncSession) -> dict[str, int]:
    rows = (await session.execute(select(BillingCounter.name, BillingCounter.value))).tuples().all()
    return {name: int(value) for name, value in rows}


@dataclass(frozen=True)
class OutboxStats:
    by_status: dict[str, int]
    in_flight: int
    oldest_pending_at: datetime | None
    next_attempt_at: datetime | None
    retrying: int


async def stats(session: AsyncSession, now: datetime) -> OutboxStats:
    by_status = {s.value: 0 for s in OutboxStatus}
    rows = await session.execute(select(BillingOutbox.status, func.count()).group_by(BillingOutbox.status))
    by_status.update({status: int(n) for status, n in rows.tuples().all()})
    pending = BillingOutbox.status == _PENDING
    oldest, nxt = (await session.execute(
        select(func.min(BillingOutbox.occurred_at), func.min(BillingOutbox.next_attempt_at)).where(pending))).one()
    in_flight = (await session.execute(
        select(func.count()).where(pending, BillingOutbox.lease_until >= now))).scalar_one()
    retrying = (await session.execute(select(func.count()).where(pending, BillingOutbox.failures > 0))).scalar_one()
    return OutboxStats(by_status=by_status, in_flight=int(in_flight), oldest_pending_at=oldest, next_attempt_at=nxt,
                       retrying=int(retrying))


async def list_rows(session: AsyncSession, *, statuses: Sequence[str] | None, account_id: str | None,
                    limit: int, offset: int) -> Sequence[BillingOutbox]:
    stmt = select(BillingOutbox)
    if statuses:
        stmt = stmt.where(BillingOutbox.status.in_(statuses))
    if account_id:
        stmt = stmt.where(BillingOutbox.account_id == account_id)
    stmt = stmt.order_by(BillingOutbox.occurred_at, BillingOutbox.usage_id).limit(limit).offset(offset)
    return (await session.execute(stmt)).scalars().all()


async def recent_failures(session: AsyncSession, limit: int) -> Sequence[BillingOutbox]:
    """Rows still queued after failed attempts, most failures first."""
    stmt = (select(BillingOutbox).where(BillingOutbox.status == _PENDING, BillingOutbox.failures > 0)
            .order_by(BillingOutbox.failures.desc(), BillingOutbox.usage_id).limit(limit))
    return (await session.execute(stmt)).scalars().all()


async def get_row(session: AsyncSession, usage_id: int, *, lock: bool = False) -> BillingOutbox | None:
    stmt = select(BillingOutbox).where(BillingOutbox.usage_id == usage_id)
    if lock:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt.execution_options(populate_existing=True))).scalar_one_or_none()


async def account_counts(session: AsyncSession, account_id: str) -> dict[str, int]:
    rows = await session.execute(select(BillingOutbox.status, func.count())
                                 .where(BillingOutbox.account_id == account_id).group_by(BillingOutbox.status))
    return {status: int(n) for status, n in rows.tuples().all()}


# -- webhook events ------------------------------------------------------------------------------


async def store_event(session: AsyncSession, event: WebhookEvent) -> bool:
    """Stores the event unless its id is known; True if it is new. A redelivery only counts."""
    insert_ = dialect_insert(session)
    values = {c.name: getattr(event, c.key) for c in WebhookEvent.__table__.columns}
    result = await session.execute(insert_(WebhookEvent).values(values).on_conflict_do_nothing()
                                   .returning(WebhookEvent.id))
    if result.scalar_one_or_none() is not None:
        return True
    await session.execute(update(WebhookEvent).where(WebhookEvent.id == event.id)
                          .values(deliveries=WebhookEvent.deliveries + 1).execution_options(synchronize_session=False))
    return False


async def take_event(session: AsyncSession, event_id: str) -> WebhookEvent | None:
    """Locks an unprocessed event for this transaction (a write first, so SQLite serialises too)."""
    result = await session.execute(
        update(WebhookEvent).where(WebhookEvent.id == event_id, WebhookEvent.processed_at.is_(None))
        .values(attempts=WebhookEvent.attempts + 1).returning(WebhookEvent.id)
        .execution_options(synchronize_session=False))
    if result.scalar_one_or_none() is None:
        return None
    return await session.get(WebhookEvent, event_id, populate_existing=True)


async def event_outcome(session: AsyncSession, event_id: str) -> WebhookEvent | None:
    return await session.get(WebhookEvent, event_id, populate_existing=True)


async def finish_event(session: AsyncSession, event_id: str, *, outcome: str, now: datetime) -> None:
    await session.execute(update(WebhookEvent).where(WebhookEvent.id == event_id)
                          .values(processed_at=now, outcome=outcome, last_error=None)
                          .execution_options(synchronize_session=False))


async def event_failed(session: AsyncSession, event_id: str, error: str) -> None:
    await session.execute(update(WebhookEvent).where(WebhookEvent.id == event_id)
                          .values(attempts=WebhookEvent.attempts + 1, last_error=error[:2000])
                          .execution_options(synchronize_session=False))


async def unprocessed_events(session: AsyncSession, *, received_before: datetime, limit: int) -> list[str]:
    stmt = (select(WebhookEvent.id).where(WebhookEvent.processed_at.is_(None),
                                          WebhookEvent.received_at < received_before)
            .order_by(WebhookEvent.created, WebhookEvent.id).limit(limit))
    return list((await session.execute(stmt)).scalars().all())


async def webhook_stats(session: AsyncSession) -> tuple[int, int, datetime | None]:
    """(received, unprocessed, last received)."""
    total, last = (await session.execute(select(func.count(), func.max(WebhookEvent.received_at)))).one()
    unprocessed = (await session.execute(select(func.count()).where(WebhookEvent.processed_at.is_(None)))
                   ).scalar_one()
    return int(total), int(unprocessed), last


# -- invoices ------------------------------------------------------------------------------------


async def invoice(session: AsyncSession, invoice_id: str) -> BillingInvoice | None:
    stmt = select(BillingInvoice).where(BillingInvoice.id == invoice_id).with_for_update()
    return (await session.execute(stmt.execution_options(populate_existing=True))).scalar_one_or_none()


async def earliest_failed_invoice(session: AsyncSession, account_id: str) -> datetime | None:
    stmt = select(func.min(BillingInvoice.failed_at)).where(BillingInvoice.account_id == account_id,
                                                            BillingInvoice.status == "payment_failed")
    value: datetime | None = (await session.execute(stmt)).scalar_one_or_none()
    return value


async def open_invoices(session: AsyncSession, account_id: str) -> Sequence[BillingInvoice]:
    stmt = (select(BillingInvoice).where(BillingInvoice.account_id == account_id,
                                         BillingInvoice.status == "payment_failed")
            .order_by(BillingInvoice.failed_at))
    return (await session.execute(stmt)).scalars().all()


async def reopen_for_customer(session: AsyncSession, customer_id: str) -> list[str]:
    """Events that arrived before their customer was linked, made due again (oldest first)."""
    result = await session.execute(
        update(WebhookEvent).where(WebhookEvent.stripe_customer_id == customer_id,
                                   WebhookEvent.outcome == "unknown_customer")
        .values(processed_at=None, outcome=None).returning(WebhookEvent.id, WebhookEvent.created)
        .execution_options(synchronize_session=False))
    return [event_id for event_id, _ in sorted(result.tuples().all(), key=lambda r: (r[1], r[0]))]


async def paid_invoice_totals(session: AsyncSession, start: datetime, end: datetime) -> dict[str, int]:
    """Amounts paid (minor units) per currency on invoices paid in [start, end)."""
    stmt = (select(BillingInvoice.currency, func.sum(BillingInvoice.amount_paid))
            .where(BillingInvoice.status == "paid", BillingInvoice.paid_at >= start, BillingInvoice.paid_at < end)
            .group_by(BillingInvoice.currency).order_by(BillingInvoice.currency))
    return {currency.lower(): int(total or 0) for currency, total in (await session.execute(stmt)).tuples().all()}


async def past_due_accounts(session: AsyncSession, limit: int) -> Sequence[Account]:
    """Accounts with an unpaid failed invoice, longest overdue first."""
    stmt = (select(Account).where(Account.billing_past_due_since.is_not(None))
            .order_by(Account.billing_past_due_since, Account.id).limit(limit))
    return (await session.execute(stmt)).scalars().all()


_RECONCILIATION_KEY = "billing.last_reconciliation"


async def last_reconciliation(session: AsyncSession) -> str | None:
    row = await session.get(SystemMeta, _RECONCILIATION_KEY, populate_existing=True)
    return row.value if row is not None else None


async def store_reconciliation(session: AsyncSession, value: str) -> None:
    insert_ = dialect_insert(session)
    stmt = insert_(SystemMeta).values(key=_RECONCILIATION_KEY, value=value)
    await session.execute(stmt.on_conflict_do_update(index_elements=[SystemMeta.key], set_={"value": value}))
