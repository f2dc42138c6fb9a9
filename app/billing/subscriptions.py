"""Subscription and invoice state from Stripe events, applied idempotently and in any order.

Subscriptions: an account follows one subscription. An event is applied only if it is newer
(by the event's ``created``) than the last one applied to the account; a canceled subscription
is final, so nothing about that subscription can revive it, and ending a subscription the
account no longer follows changes nothing. Two events of one subscription within the same
second cannot be ordered by ``created``: the later arrival wins unless the account already
holds the final (canceled) state.

Invoices: each invoice's own state (payment_failed → paid | voided, the last two final) is
kept, so a late ``payment_failed`` never undoes a ``paid``. An account is past due while any
of its invoices is in ``payment_failed``; the grace period runs from the earliest such failure.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as accounts_repo
from app.accounts.models import Account, Plan
from app.billing import repository as repo
from app.billing.models import BillingInvoice
from app.config import Settings
from app.kit.clock import utcnow
from app.licensing import service as licensing

log = logging.getLogger("ponyserve.billing.subscriptions")

# The subscription grants its plan in these states (past_due/unpaid: the invoices' grace decides).
LIVE = frozenset({"active", "trialing", "past_due", "unpaid"})
# The account falls back to the fallback plan in these.
ENDED = frozenset({"canceled", "incomplete_expired", "paused"})
# No event can bring a subscription back from these.
FINAL = frozenset({"canceled", "incomplete_expired"})


def object_id(value: Any) -> str | None:
    """Stripe fields are an id or, when expanded, the object itself."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def from_unix(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if isinstance(value, int | float) and value > 0 else None


async def account_for_customer(session: AsyncSession, customer: Any) -> Account | None:
    customer_id = object_id(customer)
    if customer_id is None:
        return None
    stmt = select(Account).where(Account.stripe_customer_id == customer_id).with_for_update(of=Account)
    return (await session.execute(stmt.execution_options(populate_existing=True))).scalar_one_or_none()


def price_ids(subscription: dict[str, Any]) -> list[str]:
    items = (subscription.get("items") or {}).get("data") or []
    return [pid for pid in (object_id(item.get("price")) for item in items if isinstance(item, dict)) if pid]


async def plan_for_prices(session: AsyncSession, prices: list[str]) -> Plan | None:
    """The plan whose flat price is on the subscription, else the one plan whose metered price is."""
    if not prices:
        return None
    flat = (await session.execute(select(Plan).where(Plan.stripe_price_id.in_(prices)).order_by(Plan.id))
            ).scalars().first()
    if flat is not None:
        return flat
    metered = (await session.execute(select(Plan).where(Plan.stripe_metered_price_id.in_(prices)))).scalars().all()
    return metered[0] if len(metered) == 1 else None


async def apply_subscription(session: AsyncSession, settings: Settings, account: Account,
                             subscription: dict[str, Any], event_type: str, event_created: datetime) -> str:
    sub_id = object_id(subscription.get("id"))
    status = str(subscription.get("status") or "")
    if event_type == "customer.subscription.deleted":
        status = "canceled"
    if sub_id is None or not status:
        return "ignored"
    tracked, tracked_status, last = account.stripe_subscription_id, account.subscription_status, \
        account.subscription_event_at
    if tracked is not None and tracked != sub_id:
        if status in FINAL or status == "incomplete":
            return "ignored"  # ending (or not yet starting) a subscription we do not follow changes nothing
        if tracked_status not in FINAL and last is not None and event_created <= last:
            return "stale"
    else:
        if tracked_status in FINAL and status not in FINAL:
            return "stale"  # a canceled subscription never comes back
        if last is not None and (event_created < last or (event_created == last and tracked_status in FINAL)):
            return "stale"
    account.stripe_subscription_id = sub_id
    account.subscription_status = status
    account.subscription_event_at = event_created
    if status in LIVE:
        plan = await plan_for_prices(session, price_ids(subscription))
        if plan is None:
            log.warning("no plan maps to the prices of subscription %s: plan unchanged", sub_id)
        elif plan.id != account.plan_id:
            account.plan_id, account.plan = plan.id, plan
    elif status in ENDED and (account.plan.stripe_price_id or account.plan.stripe_metered_price_id):
        fallback = await accounts_repo.plan_by_code(session, settings.billing_fallback_plan)
        if fallback is None:
            raise RuntimeError(f"billing_fallback_plan '{settings.billing_fallback_plan}' does not exist")
        account.plan_id, account.plan = fallback.id, fallback
    await session.flush()
    return "applied"


async def _invoice_row(session: AsyncSession, account: Account, invoice: dict[str, Any], status: str,
                       event_created: datetime) -> tuple[BillingInvoice, str | None]:
    """The invoice's row (created if new) and its status before this event."""
    invoice_id = str(invoice["id"])
    row = await repo.invoice(session, invoice_id)
    previous = row.status if row is not None else None
    if row is None:
        row = BillingInvoice(id=invoice_id, account_id=account.id, status=status,
                             currency=str(invoice.get("currency") or ""), event_created=event_created)
        session.add(row)
    row.amount_due = int(invoice.get("amount_due") or 0)
    row.updated_at = utcnow()
    row.event_created = max(row.event_created, event_created)
    return row, previous


async def _refresh_past_due(session: AsyncSession, settings: Settings, account: Account) -> None:
    await session.flush()
    since = await repo.earliest_failed_invoice(session, account.id)
    account.billing_past_due_since = since
    account.billing_grace_until = since + timedelta(seconds=settings.billing_grace_period_seconds) if since else None
    await session.flush()


async def invoice_payment_failed(session: AsyncSession, settings: Settings, account: Account,
                                 invoice: dict[str, Any], event_created: datetime) -> str:
    row, previous = await _invoice_row(session, account, invoice, "payment_failed", event_created)
    if previous in ("paid", "voided"):
        return "stale"
    row.status = "payment_failed"
    row.failed_at = min(row.failed_at, event_created) if row.failed_at else event_created
    await _refresh_past_due(session, settings, account)
    return "applied"


async def invoice_paid(session: AsyncSession, settings: Settings, account: Account, invoice: dict[str, Any],
                       event_created: datetime) -> str:
    row, previous = await _invoice_row(session, account, invoice, "paid", event_created)
    paid_at = from_unix((invoice.get("status_transitions") or {}).get("paid_at")) or event_created
    row.status = "paid"
    row.amount_paid = int(invoice.get("amount_paid") or 0)
    row.paid_at = paid_at
    if row.amount_paid > 0 and row.currency.lower() == settings.billing_revenue_currency.lower():
        # Idempotent on the reference: a replayed or duplicated invoice.paid records it once.
        await licensing.record_revenue(
            session, amount_usd=(Decimal(row.amount_paid) / 100).quantize(Decimal("0.01")), occurred_at=paid_at,
            source="stripe", reference=row.id, note=f"Stripe invoice {row.id}", account_id=account.id)
    elif row.amount_paid > 0:
        log.warning("invoice %s paid in %s: not recorded as revenue (revenue currency is %s)", row.id,
                    row.currency, settings.billing_revenue_currency)
    await _refresh_past_due(session, settings, account)
    return "applied" if previous != "paid" else "duplicate"


async def invoice_voided(session: AsyncSession, settings: Settings, account: Account, invoice: dict[str, Any],
                         event_created: datetime) -> str:
    row, previous = await _invoice_row(session, account, invoice, "voided", event_created)
    if previous == "paid":
        return "stale"
    row.status = "voided"
    await _refresh_past_due(session, settings, account)
    return "applied"
