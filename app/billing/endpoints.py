"""Billing routes: the Stripe webhook intake and the admins' billing pages (scope ``admin``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Header, Query, Request

from app.accounts.auth import AdminCaller
from app.billing import repository as repo
from app.billing import service
from app.billing.schemas import (
    AccountBilling,
    BillingOverview,
    CheckoutCreate,
    CheckoutOut,
    CustomerLink,
    OutboxList,
    OutboxResolve,
    OutboxRowOut,
    OutboxStatusName,
    SubscriptionCreate,
    SubscriptionOut,
    WebhookAck,
)
from app.billing.stripe_api import StripeGateway
from app.billing.webhooks import process_stored_event, receive
from app.config import Settings
from app.context import ContextDep
from app.db import Database, SessionDep
from app.errors import COMMON_ERROR_RESPONSES, ErrorResponse
from app.kit.clock import utcnow
from app.kit.pagination import PageDep

router = APIRouter(prefix="/admin", tags=["billing"], responses=COMMON_ERROR_RESPONSES)
webhooks_router = APIRouter(tags=["webhooks"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse}, 409: {"model": ErrorResponse},
    502: {"model": ErrorResponse, "description": "Stripe refused the request"},
    503: {"model": ErrorResponse, "description": "Stripe could not be reached; retry (see Retry-After)"},
}


def _gateway(request: Request) -> StripeGateway | None:
    gateway: StripeGateway | None = getattr(request.app.state, "stripe", None)
    return gateway


async def _apply_events(db: Database, settings: Settings, event_ids: list[str]) -> None:
    for event_id in event_ids:
        await process_stored_event(db, settings, event_id)


@webhooks_router.post(
    "/webhooks/stripe", response_model=WebhookAck,
    responses={400: {"model": ErrorResponse, "description": "Missing, forged or stale signature, or not an event"}},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}},
)
async def stripe_webhook(
    request: Request, ctx: ContextDep,
    stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
) -> WebhookAck:
    """Stripe event deliveries. The signature is checked on the raw body against every configured
    endpoint secret; each event is stored once by its id and applied once, in any order.
    Replays and duplicates are acknowledged without effect."""
    raw = await request.body()
    receipt = await receive(ctx.db, ctx.settings, raw, stripe_signature)
    return WebhookAck(event_id=receipt.event_id, duplicate=receipt.duplicate, outcome=receipt.outcome)


@router.get("/billing", response_model=BillingOverview)
async def billing_overview(_: AdminCaller, ctx: ContextDep, session: SessionDep) -> BillingOverview:
    """The usage outbox towards Stripe: backlog, its oldest event's age, retries, totals sent and failed,
    events set aside for a decision (expired, unconfirmed, failed), and webhook intake."""
    return await service.overview(session, ctx.settings, utcnow())


@router.get("/billing/outbox", response_model=OutboxList)
async def list_outbox(
    _: AdminCaller, session: SessionDep, page: PageDep,
    status: Annotated[list[OutboxStatusName] | None, Query(description="Filter by status (repeatable)")] = None,
    account_id: Annotated[str | None, Query(max_length=40)] = None,
) -> OutboxList:
    """Outbox events, oldest usage first."""
    rows = await repo.list_rows(session, statuses=status, account_id=account_id, limit=page.limit,
                                offset=page.offset)
    return OutboxList(data=[OutboxRowOut.model_validate(r) for r in rows], limit=page.limit, offset=page.offset)


@router.post("/billing/outbox/{usage_id}/resolve", response_model=OutboxRowOut, responses=_ERRORS)
async def resolve_outbox(usage_id: int, body: OutboxResolve, caller: AdminCaller, ctx: ContextDep,
                         session: SessionDep) -> OutboxRowOut:
    """Decide on a set-aside event: `resend`, `mark_sent` or `dismiss` (see docs/billing.md)."""
    row = await service.resolve(session, ctx.settings, usage_id, body.action, by=caller.key.id, now=utcnow())
    return OutboxRowOut.model_validate(row)


@router.get("/accounts/{account_id}/billing", response_model=AccountBilling, responses=_ERRORS)
async def account_billing(account_id: str, _: AdminCaller, session: SessionDep) -> AccountBilling:
    """The account's Stripe customer, subscription, past-due state and outbox counts."""
    return await service.account_billing(session, account_id, utcnow())


@router.post("/accounts/{account_id}/billing/customer", response_model=AccountBilling, responses=_ERRORS)
async def link_customer(account_id: str, body: CustomerLink, _: AdminCaller, ctx: ContextDep, session: SessionDep,
                        request: Request, background: BackgroundTasks) -> AccountBilling:
    """Link the account to an existing Stripe customer, or create one in Stripe. Idempotent. Usage
    from before the link is not billed; from now on every image on a paid plan is."""
    reopened = await service.link_customer(session, _gateway(request), account_id,
                                           customer_id=body.stripe_customer_id, email=body.email, now=utcnow())
    if reopened:
        # After this request's commit: events that arrived before the link now find the account.
        background.add_task(_apply_events, ctx.db, ctx.settings, reopened)
    return await service.account_billing(session, account_id, utcnow())


@router.post("/accounts/{account_id}/billing/checkout", status_code=201, response_model=CheckoutOut,
             responses=_ERRORS)
async def create_checkout(account_id: str, body: CheckoutCreate, _: AdminCaller, session: SessionDep,
                          request: Request) -> CheckoutOut:
    """A Stripe Checkout session subscribing the account's customer to the plan's prices (flat and
    metered). Idempotent: the same request returns the same session until a subscription is made.
    The plan change follows from Stripe's subscription webhooks."""
    out = await service.create_checkout(session, _gateway(request), account_id, plan_code=body.plan,
                                        success_url=body.success_url, cancel_url=body.cancel_url, now=utcnow())
    return CheckoutOut(**out)


@router.post("/accounts/{account_id}/billing/subscription", status_code=201, response_model=SubscriptionOut,
             responses=_ERRORS)
async def create_subscription(account_id: str, body: SubscriptionCreate, _: AdminCaller, session: SessionDep,
                              request: Request) -> SubscriptionOut:
    """Subscribe the account's customer to the plan's prices directly (invoiced customers, no Checkout).
    Idempotent: while that subscription has not ended, repeating the request returns it; another plan
    is a 409 until it is canceled. The plan change follows from Stripe's subscription webhooks."""
    out = await service.create_subscription(session, _gateway(request), account_id, plan_code=body.plan)
    return SubscriptionOut(**out)
