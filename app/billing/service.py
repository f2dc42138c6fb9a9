"""Billing operations behind the admin endpoints: customers, checkout, subscriptions, the outbox."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import service as accounts
from app.accounts.models import Account, Plan
from app.billing import repository as repo
from app.billing.metrics import BILLING
from app.billing.models import SET_ASIDE, BillingOutbox, OutboxStatus
from app.billing.schemas import (
    AccountBilling,
    BillingOverview,
    InvoiceOut,
    OutboxRowOut,
    OutboxSummary,
    WebhookSummary,
)
from app.billing.stripe_api import StripeGateway
from app.billing.subscriptions import FINAL, LIVE, price_ids
from app.config import Settings
from app.errors import Conflict, InvalidRequest, NotFound


def _require(gateway: StripeGateway | None) -> StripeGateway:
    if gateway is None:
        raise InvalidRequest("Stripe is not configured on this deployment (PONYSERVE_STRIPE_SECRET_KEY).",
                             code="billing_not_configured")
    return gateway


def keys_refused(account: Account, now: datetime) -> bool:
    """Whether the account's keys are refused with 402: an invoice unpaid past its grace period."""
    return account.billing_grace_until is not None and now >= account.billing_grace_until


async def account_billing(session: AsyncSession, account_id: str, now: datetime) -> AccountBilling:
    account = await accounts.get_account(session, account_id)
    return AccountBilling(
        account_id=account.id, plan=account.plan.code, stripe_customer_id=account.stripe_customer_id,
        stripe_linked_at=account.stripe_linked_at, stripe_subscription_id=account.stripe_subscription_id,
        subscription_status=account.subscription_status, subscription_event_at=account.subscription_event_at,
        past_due_since=account.billing_past_due_since, grace_until=account.billing_grace_until,
        keys_refused=keys_refused(account, now),
        unpaid_invoices=[InvoiceOut.model_validate(i) for i in await repo.open_invoices(session, account.id)],
        outbox=await repo.account_counts(session, account.id),
    )


async def link_customer(session: AsyncSession, gateway: StripeGateway | None, account_id: str, *,
                        customer_id: str | None, email: str | None, now: datetime) -> list[str]:
    """Links the account to a Stripe customer (the given one, or a new one created in Stripe).

    Idempotent: linking the customer already linked, or asking again for a new one, changes
    nothing. Returns ids of stored webhook events for that customer that arrived before the
    link, to be applied now.
    """
    account = await accounts.get_account(session, account_id)
    if customer_id is None and account.stripe_customer_id is not None:
        return []
    if customer_id is not None and customer_id == account.stripe_customer_id:
        return []
    if account.stripe_customer_id is not None and account.subscription_status in LIVE:
        raise Conflict("The account has a live subscription on its current Stripe customer; cancel it first.",
                       code="subscription_exists", param="stripe_customer_id")
    if customer_id is not None:
        holder = (await session.execute(select(Account.id).where(Account.stripe_customer_id == customer_id))
                  ).scalar_one_or_none()
        if holder is not None:
            raise Conflict(f"Customer '{customer_id}' is linked to another account.", code="customer_linked_elsewhere",
                           param="stripe_customer_id")
        if gateway is not None and not await gateway.customer_exists(customer_id):
            raise InvalidRequest(f"Stripe has no customer '{customer_id}'.", code="unknown_stripe_customer",
                                 param="stripe_customer_id")
    else:
        customer_id = await _require(gateway).create_customer(account_id=account.id, name=account.name, email=email)
    if account.stripe_customer_id is not None:
        # A different customer: the old one's subscription state no longer describes this account.
        account.stripe_subscription_id = account.subscription_status = None
        account.subscription_event_at = None
    account.stripe_customer_id = customer_id
    account.stripe_linked_at = now
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict(f"Customer '{customer_id}' is linked to another account.", code="customer_linked_elsewhere",
                       param="stripe_customer_id") from None
    return await repo.reopen_for_customer(session, customer_id)


def _prices(plan: Plan) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if plan.stripe_price_id:
        items.append({"price": plan.stripe_price_id, "quantity": 1})
    if plan.stripe_metered_price_id:
        # Metered prices take no quantity: the meter events are the quantity.
        items.append({"price": plan.stripe_metered_price_id})
    if not items:
        raise InvalidRequest(f"Plan '{plan.code}' has no Stripe prices (set stripe_price_id / "
                             "stripe_metered_price_id).", code="plan_not_billable", param="plan")
    return items


async def _linked(session: AsyncSession, account_id: str) -> tuple[Account, str]:
    account = await accounts.get_account(session, account_id)
    if account.stripe_customer_id is None:
        raise Conflict("Link a Stripe customer first (POST /admin/accounts/{id}/billing/customer).",
                       code="customer_not_linked")
    return account, account.stripe_customer_id


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _subscription_key(account_id: str, customer: str, generation: int) -> str:
    """The Stripe idempotency key of the account's ``generation``-th subscription on this customer.

    The plan is deliberately not part of it: two concurrent requests for different plans then share
    the key, and Stripe refuses the second (a 409 here) instead of creating two subscriptions.
    """
    return f"ponyserve-subscription-{account_id}-{customer}-{generation}"


# Stripe keeps idempotency keys for about a day, as long as a Checkout session lives by default, so
# a request can meet at most a few replayed sessions that have expired in the meantime.
_EXPIRED_REPLAYS = 3


def _checkout_key(account_id: str, customer: str, generation: int, request: list[object]) -> str:
    # The whole request is part of the intent: another plan or other URLs is a new Checkout session.
    return f"ponyserve-checkout-{account_id}-{customer}-{generation}-{_digest(request)}"


async def create_checkout(session: AsyncSession, gateway: StripeGateway | None, account_id: str, *, plan_code: str,
                          success_url: str, cancel_url: str, now: datetime) -> dict[str, Any]:
    """A Checkout session for the plan; a retry of the same request returns the same session.

    The customer's subscription count is the generation: once a session has been completed (or any
    other subscription made), the same request opens a fresh session.
    """
    gw = _require(gateway)
    account, customer = await _linked(session, account_id)
    line_items = _prices(await accounts.get_plan(session, plan_code))
    generation = len(await gw.list_subscriptions(customer))
    key = _checkout_key(account.id, customer, generation, [line_items, success_url, cancel_url])

    async def open_session(idempotency_key: str) -> dict[str, Any]:
        return await gw.create_checkout_session(account_id=account.id, customer=customer, line_items=line_items,
                                                success_url=success_url, cancel_url=cancel_url,
                                                idempotency_key=idempotency_key)

    checkout = await open_session(key)
    for _ in range(_EXPIRED_REPLAYS):
        if checkout["expires_at"] is None or checkout["expires_at"] > now.timestamp():
            break
        # Stripe replayed a session that has expired since: asking again is a new intent, named after it.
        checkout = await open_session(f"{key}-after-{checkout['id']}")
    return checkout


def _same_prices(subscription: dict[str, Any], items: list[dict[str, Any]]) -> bool:
    return set(price_ids(subscription)) == {str(item["price"]) for item in items}


def _follows_another(account: Account, subscription_id: str) -> bool:
    """Whether the account follows a different subscription that has not ended."""
    tracked = account.stripe_subscription_id
    return tracked is not None and tracked != subscription_id and account.subscription_status not in FINAL


async def _follow(session: AsyncSession, account: Account, subscription: dict[str, Any]) -> dict[str, Any]:
    """The account follows ``subscription`` from now on; its webhooks (any order) bring the status and the plan."""
    out = {"id": str(subscription["id"]), "status": str(subscription["status"])}
    if account.stripe_subscription_id != out["id"]:
        account.stripe_subscription_id, account.subscription_status = out["id"], out["status"]
        account.subscription_event_at = None
        await session.flush()
    return out


async def create_subscription(session: AsyncSession, gateway: StripeGateway | None, account_id: str, *,
                              plan_code: str) -> dict[str, Any]:
    """Subscribes the account's customer to the plan's prices, at most once per intent.

    Stripe is asked first: a subscription to these prices that has not ended is the one an earlier
    attempt made (its answer lost, or our commit after it), so it is returned, not doubled. A new one
    is created only once every earlier subscription of the customer has ended, under a key naming
    that generation, so concurrent or retried attempts that both got this far still make one.
    """
    gw = _require(gateway)
    account, customer = await _linked(session, account_id)
    items = _prices(await accounts.get_plan(session, plan_code))
    existing = await gw.list_subscriptions(customer)
    current = [sub for sub in existing if sub.get("status") not in FINAL]
    same = next((sub for sub in current if _same_prices(sub, items)), None)
    if same is not None and not _follows_another(account, str(same["id"])):
        return await _follow(session, account, same)
    if current or account.subscription_status in LIVE:
        sub_id = current[0]["id"] if current else account.stripe_subscription_id
        raise Conflict(f"The account already has a subscription that has not ended ({sub_id}); cancel it first.",
                       code="subscription_exists")
    sub = await gw.create_subscription(account_id=account.id, customer=customer, items=items,
                                       idempotency_key=_subscription_key(account.id, customer, len(existing)))
    return await _follow(session, account, sub)


async def overview(session: AsyncSession, settings: Settings, now: datetime) -> BillingOverview:
    reading = await BILLING.refresh(session, now)
    stats = reading.stats
    received, unprocessed, last = await repo.webhook_stats(session)
    set_aside = await repo.list_rows(session, statuses=[s.value for s in SET_ASIDE], account_id=None, limit=50,
                                     offset=0)
    return BillingOverview(
        stripe_configured=settings.stripe_enabled, meter_event_name=settings.stripe_meter_event_name,
        outbox=OutboxSummary(
            backlog=stats.by_status.get(OutboxStatus.PENDING.value, 0), in_flight=stats.in_flight,
            retrying=stats.retrying, oldest_pending_at=stats.oldest_pending_at,
            oldest_age_seconds=reading.oldest_age_seconds, next_attempt_at=stats.next_attempt_at,
            by_status=stats.by_status, sent_total=reading.sent_total, failures_total=reading.failures_total),
        recent_failures=[OutboxRowOut.model_validate(r) for r in await repo.recent_failures(session, 20)],
        set_aside=[OutboxRowOut.model_validate(r) for r in set_aside],
        webhooks=WebhookSummary(received=received, unprocessed=unprocessed, last_received_at=last),
    )


_ALLOWED = {
    "resend": (OutboxStatus.UNCONFIRMED, OutboxStatus.FAILED),
    "mark_sent": (OutboxStatus.UNCONFIRMED,),
    "dismiss": (OutboxStatus.EXPIRED, OutboxStatus.UNCONFIRMED, OutboxStatus.FAILED),
}


async def resolve(session: AsyncSession, settings: Settings, usage_id: int, action: str, *, by: str,
                  now: datetime) -> BillingOutbox:
    """An admin's decision on a set-aside event (see OutboxResolve)."""
    row = await repo.get_row(session, usage_id, lock=True)
    if row is None:
        raise NotFound(f"No outbox event for ledger row {usage_id}.", param="usage_id")
    if row.status not in _ALLOWED[action]:
        allowed = ", ".join(s.value for s in _ALLOWED[action])
        raise Conflict(f"'{action}' applies to {allowed} events; this one is {row.status}.",
                       code="invalid_outbox_transition", param="action")
    if action == "resend":
        if row.occurred_at < now - timedelta(seconds=settings.billing_event_max_age_seconds):
            raise Conflict("The usage is older than Stripe accepts; dismiss it instead.", code="usage_too_old",
                           param="action")
        account = await accounts.get_account(session, row.account_id)
        row.stripe_customer_id = account.stripe_customer_id or row.stripe_customer_id
        row.status, row.next_attempt_at = OutboxStatus.PENDING.value, now
        row.doubt_since = row.claim_token = row.lease_until = None
    elif action == "mark_sent":
        row.status, row.sent_at = OutboxStatus.SENT.value, now
        await repo.bump_counters(session, sent=1)
    else:
        row.status = OutboxStatus.DISMISSED.value
    row.resolved_by = by
    await session.flush()
    return row


async def paid_revenue(session: AsyncSession, start: datetime, end: datetime) -> dict[str, int]:
    """What recorded invoices say was paid in [start, end): minor units (cents) per currency."""
    return await repo.paid_invoice_totals(session, start, end)


async def past_due_accounts(session: AsyncSession, now: datetime, *, limit: int = 100) -> list[AccountBilling]:
    """Accounts with an unpaid failed invoice, longest overdue first, each as its billing view shows it."""
    return [await account_billing(session, account.id, now) for account in await repo.past_due_accounts(session, limit)]


async def record_reconciliation(session: AsyncSession, report: dict[str, Any], *, by: str, now: datetime) -> None:
    """Keeps the latest reconciliation report (who ran it, when) for the admins' billing page."""
    await repo.store_reconciliation(session, json.dumps({**report, "run_by": by, "run_at": now.isoformat()},
                                                        default=str))


async def last_reconciliation(session: AsyncSession) -> dict[str, Any] | None:
    """The latest recorded reconciliation report, with ``run_by`` and ``run_at``; None before the first."""
    value = await repo.last_reconciliation(session)
    if value is None:
        return None
    report: dict[str, Any] = json.loads(value)
    return report
