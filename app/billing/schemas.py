"""Bodies of the billing endpoints (admin and webhook)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.kit.request import RequestModel

OutboxStatusName = Literal["pending", "sent", "expired", "unconfirmed", "failed", "dismissed"]


class CustomerLink(RequestModel):
    model_config = ConfigDict(extra="forbid")

    stripe_customer_id: str | None = Field(
        default=None, pattern=r"^cus_[A-Za-z0-9]{1,250}$",
        description="Link this existing Stripe customer. Omit it to create a customer in Stripe for the account.")
    email: str | None = Field(default=None, max_length=320, description="For a new customer: its billing email")


class CheckoutCreate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    plan: str = Field(min_length=1, max_length=64, description="Code of a plan with Stripe prices")
    success_url: str = Field(min_length=1, max_length=2000, pattern=r"^https?://[^\x00-\x1f\x7f]*$")
    cancel_url: str = Field(min_length=1, max_length=2000, pattern=r"^https?://[^\x00-\x1f\x7f]*$")


class CheckoutOut(BaseModel):
    id: str
    url: str | None = Field(description="Send the customer here to subscribe")
    expires_at: int | None


class SubscriptionCreate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    plan: str = Field(min_length=1, max_length=64, description="Code of a plan with Stripe prices")


class SubscriptionOut(BaseModel):
    id: str
    status: str


class InvoiceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    status: str
    amount_due: int
    currency: str
    failed_at: datetime | None


class AccountBilling(BaseModel):
    account_id: str
    plan: str
    stripe_customer_id: str | None
    stripe_linked_at: datetime | None
    stripe_subscription_id: str | None
    subscription_status: str | None
    subscription_event_at: datetime | None = Field(description="`created` of the newest subscription event applied")
    past_due_since: datetime | None
    grace_until: datetime | None = Field(description="From this moment the account's keys get 402 billing_past_due")
    keys_refused: bool
    unpaid_invoices: list[InvoiceOut]
    outbox: dict[str, int] = Field(description="This account's outbox rows by status")


class OutboxRowOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    usage_id: int
    account_id: str
    stripe_customer_id: str
    value: int
    occurred_at: datetime
    status: str
    attempts: int
    failures: int
    next_attempt_at: datetime
    doubt_since: datetime | None
    last_error: str | None
    sent_at: datetime | None
    resolved_by: str | None


class OutboxList(BaseModel):
    data: list[OutboxRowOut]
    limit: int
    offset: int


class OutboxSummary(BaseModel):
    backlog: int = Field(description="Events waiting to be sent (pending)")
    in_flight: int = Field(description="Pending events a reporter holds right now")
    retrying: int = Field(description="Pending events that failed at least once")
    oldest_pending_at: datetime | None = Field(description="Usage time of the oldest unsent event")
    oldest_age_seconds: float = Field(description="Its age; Stripe refuses events older than 35 days")
    next_attempt_at: datetime | None
    by_status: dict[str, int]
    sent_total: int
    failures_total: int = Field(description="Failed attempts, all time")


class WebhookSummary(BaseModel):
    received: int
    unprocessed: int
    last_received_at: datetime | None


class BillingOverview(BaseModel):
    stripe_configured: bool
    meter_event_name: str
    outbox: OutboxSummary
    recent_failures: list[OutboxRowOut] = Field(description="Queued events with failed attempts, most first")
    set_aside: list[OutboxRowOut] = Field(description="Expired, unconfirmed and failed events (need an admin)")
    webhooks: WebhookSummary


class OutboxResolve(RequestModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["resend", "mark_sent", "dismiss"] = Field(
        description="`resend`: queue it again (unconfirmed or failed; for unconfirmed only once reconciliation "
                    "showed Stripe lacks it). `mark_sent`: Stripe has it (unconfirmed). `dismiss`: close it unsent "
                    "(expired, unconfirmed or failed).")


class WebhookAck(BaseModel):
    received: bool = True
    event_id: str
    duplicate: bool = Field(description="This event id had been delivered before")
    outcome: str | None = Field(description="applied, stale, ignored, unknown_customer, duplicate; null = stored, "
                                            "processing will be retried")
