"""Billing tables: the usage outbox towards Stripe, its counters, received webhook events, invoices."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime
from app.kit.clock import utcnow

_BIG_ID = BigInteger().with_variant(Integer, "sqlite")


class OutboxStatus(StrEnum):
    # Waiting to be sent (or being sent, while a reporter holds its lease).
    PENDING = "pending"
    # Stripe accepted the meter event.
    SENT = "sent"
    # Older than Stripe accepts (35 days) before it could be sent: set aside for an admin.
    EXPIRED = "expired"
    # An earlier attempt may have reached Stripe, and Stripe's de-duplication window has passed:
    # sending again could bill twice, not sending could bill nothing. An admin decides (reconcile).
    UNCONFIRMED = "unconfirmed"
    # Stripe rejected the event itself (4xx other than 409/429): retrying the same request cannot help.
    FAILED = "failed"
    # An admin closed a set-aside row without sending it (billed another way, or written off).
    DISMISSED = "dismissed"


SET_ASIDE = (OutboxStatus.EXPIRED, OutboxStatus.UNCONFIRMED, OutboxStatus.FAILED)


class BillingOutbox(Base):
    """One meter event to send per billable ledger row, written in the ledger row's own transaction."""

    __tablename__ = "billing_outbox"
    __table_args__ = (
        Index("ix_billing_outbox_claim", "status", "next_attempt_at"),
        Index("ix_billing_outbox_status_occurred", "status", "occurred_at"),
        Index("ix_billing_outbox_account_occurred", "account_id", "occurred_at"),
    )

    # The ledger row this event bills; the meter event's identifier is derived from it.
    usage_id: Mapped[int] = mapped_column(_BIG_ID, ForeignKey("usage_ledger.id"), primary_key=True,
                                          autoincrement=False)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    # The customer at the time the usage happened: a later relink does not move old usage.
    stripe_customer_id: Mapped[str] = mapped_column(String(255))
    value: Mapped[int] = mapped_column(Integer)
    # The usage's own time: what Stripe bills the event under (and must be within 35 days).
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # A reporter's claim: who holds the row, since when and until when.
    claim_token: Mapped[str | None] = mapped_column(String(32))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Start of the earliest attempt whose outcome we never learned (timeout, 5xx, crash). Re-sending
    # with the same identifier is safe only while Stripe still de-duplicates against that attempt.
    doubt_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class BillingCounter(Base):
    """Monotonic totals (events sent, failed attempts) shared by every reporter, for Prometheus."""

    __tablename__ = "billing_counters"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(_BIG_ID, default=0)


class WebhookEvent(Base):
    """A Stripe event as received, stored once by its id; ``processed_at`` set when its effects are applied."""

    __tablename__ = "billing_webhook_events"
    __table_args__ = (
        Index("ix_billing_webhook_events_unprocessed", "processed_at", "received_at"),
        Index("ix_billing_webhook_events_customer", "stripe_customer_id"),
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    # data.object.customer: events for a customer not linked yet are re-applied when it is linked.
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255))
    # The event's own creation time at Stripe: the order subscription updates are applied in.
    created: Mapped[datetime] = mapped_column(UTCDateTime())
    livemode: Mapped[bool] = mapped_column(Boolean, default=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deliveries: Mapped[int] = mapped_column(Integer, default=1)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # applied | stale | ignored | unknown_customer
    outcome: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(Text)


class BillingInvoice(Base):
    """What the webhooks told us about each invoice: whether an account is past due follows from these."""

    __tablename__ = "billing_invoices"
    __table_args__ = (Index("ix_billing_invoices_account_status", "account_id", "status"),)

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    # payment_failed | paid | voided (paid and voided are final)
    status: Mapped[str] = mapped_column(String(16))
    amount_due: Mapped[int] = mapped_column(_BIG_ID, default=0)
    amount_paid: Mapped[int] = mapped_column(_BIG_ID, default=0)
    currency: Mapped[str] = mapped_column(String(8))
    # When the first payment attempt failed (Stripe's time): the grace period runs from here.
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    event_created: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
