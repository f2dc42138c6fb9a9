"""Monthly reconciliation: the ledger, the outbox and Stripe's meter totals, per account and customer.

Three ledgers of the same usage must agree for a month (by the usage's own timestamp, which is
also the meter event's timestamp, so the month boundaries line up):

* ledger → outbox: every paid-plan image of a linked account has an outbox row (usage from
  before the link is reported as ``unbilled_before_link``, by design, not as a discrepancy);
* outbox: every row is ``sent`` (``pending`` ones are still on their way; ``expired``,
  ``unconfirmed`` and ``failed`` ones need an admin);
* outbox → Stripe: Stripe's aggregated meter value per customer equals what we sent. Stripe
  aggregates asynchronously, so events sent in the last minutes may not be counted yet.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.billing.models import BillingOutbox, OutboxStatus
from app.billing.stripe_api import StripeGateway
from app.config import Settings
from app.db import Database
from app.errors import AppError
from app.licensing.service import parse_month
from app.metering.models import UsageEntry


async def _ledger(session: AsyncSession, start: datetime, end: datetime, account_id: str | None
                  ) -> dict[str, dict[str, int]]:
    """Per account: paid-plan images, and those without an outbox row before / after the link."""
    in_month = and_(UsageEntry.plan_paid.is_(True), UsageEntry.created_at >= start, UsageEntry.created_at < end)
    if account_id is not None:
        in_month = and_(in_month, UsageEntry.account_id == account_id)
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"billable_images": 0, "unbilled_before_link": 0,
                                                          "missing_outbox": 0})
    for account_id, images in (await session.execute(
            select(UsageEntry.account_id, func.sum(UsageEntry.images)).where(in_month)
            .group_by(UsageEntry.account_id))).tuples():
        out[account_id]["billable_images"] = int(images or 0)
    before_link = func.coalesce(UsageEntry.created_at < Account.stripe_linked_at, True)
    stmt = (select(UsageEntry.account_id, before_link.label("before"), func.sum(UsageEntry.images))
            .join(Account, Account.id == UsageEntry.account_id)
            .outerjoin(BillingOutbox, BillingOutbox.usage_id == UsageEntry.id)
            .where(in_month, BillingOutbox.usage_id.is_(None))
            .group_by(UsageEntry.account_id, before_link))
    for account_id, before, images in (await session.execute(stmt)).tuples():
        out[account_id]["unbilled_before_link" if before else "missing_outbox"] += int(images or 0)
    return dict(out)


async def _outbox(session: AsyncSession, start: datetime, end: datetime, account_id: str | None
                  ) -> dict[tuple[str, str], dict[str, int]]:
    """Per (account, customer): event values by status."""
    stmt = (select(BillingOutbox.account_id, BillingOutbox.stripe_customer_id, BillingOutbox.status,
                   func.sum(BillingOutbox.value))
            .where(BillingOutbox.occurred_at >= start, BillingOutbox.occurred_at < end)
            .where(BillingOutbox.account_id == account_id if account_id is not None else true())
            .group_by(BillingOutbox.account_id, BillingOutbox.stripe_customer_id, BillingOutbox.status))
    out: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {s.value: 0 for s in OutboxStatus})
    for account_id, customer, status, value in (await session.execute(stmt)).tuples():
        out[(account_id, customer)][status] = int(value or 0)
    return dict(out)


async def reconcile(db: Database, settings: Settings, month: str, gateway: StripeGateway | None, *,
                    account_id: str | None = None) -> dict[str, Any]:
    """The month's report (all accounts, or one); ``ok`` is false when anything disagrees."""
    start, end = parse_month(month)
    async with db.unit_of_work() as session:
        ledger = await _ledger(session, start, end, account_id)
        outbox = await _outbox(session, start, end, account_id)
    stripe_note = "compared"
    meter_id: str | None = None
    stripe_totals: dict[str, float] = {}
    if gateway is None:
        stripe_note = "not configured"
    else:
        try:
            meter_id = await gateway.meter_id()
            for customer in sorted({c for _, c in outbox}):
                stripe_totals[customer] = await gateway.meter_total(meter_id, customer, start, end)
        except AppError as exc:
            stripe_note = f"unreachable: {exc.message}"
            stripe_totals = {}

    discrepancies: list[dict[str, Any]] = []
    accounts = []
    for account, row in sorted(ledger.items()):
        accounts.append({"account_id": account, **row})
        if row["missing_outbox"]:
            discrepancies.append({"kind": "missing_outbox", "account_id": account, "images": row["missing_outbox"],
                                  "detail": "paid-plan usage after the customer link has no outbox row"})
    customers = []
    sent_per_customer: dict[str, int] = defaultdict(int)
    for (account, customer), by_status in sorted(outbox.items()):
        sent_per_customer[customer] += by_status[OutboxStatus.SENT.value]
        customers.append({"account_id": account, "stripe_customer_id": customer, "outbox": by_status,
                          "stripe_total": stripe_totals.get(customer) if stripe_note == "compared" else None})
        for status in (OutboxStatus.PENDING, OutboxStatus.EXPIRED, OutboxStatus.UNCONFIRMED, OutboxStatus.FAILED):
            if by_status[status.value]:
                discrepancies.append({"kind": status.value, "account_id": account, "stripe_customer_id": customer,
                                      "value": by_status[status.value]})
    if stripe_note == "compared":
        for customer, sent in sorted(sent_per_customer.items()):
            stripe_total = stripe_totals.get(customer, 0.0)
            if abs(stripe_total - sent) > 1e-9:
                discrepancies.append({"kind": "stripe_mismatch", "stripe_customer_id": customer, "sent": sent,
                                      "stripe_total": stripe_total, "difference": stripe_total - sent})
    return {"month": month, "account_id": account_id, "from": start.isoformat(), "to": end.isoformat(),
            "stripe": stripe_note,
            "meter_id": meter_id, "accounts": accounts, "customers": customers, "discrepancies": discrepancies,
            "ok": not discrepancies}
