"""Partner webhooks: registered endpoints, the outbox of messages, and each message's delivery to each endpoint."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime
from app.kit.clock import utcnow


class EndpointStatus(StrEnum):
    ENABLED = "enabled"
    # The receiver answered 410 Gone (the Standard Webhooks way to unsubscribe); nothing is sent until
    # the partner re-registers.
    DISABLED = "disabled"


class DeliveryStatus(StrEnum):
    """A delivery's lifecycle (transitions in ``app.webhooks.deliveries``)."""

    PENDING = "pending"  # waiting for its next attempt (the first, or a retry)
    SUCCEEDED = "succeeded"  # the receiver answered 2xx
    FAILED = "failed"  # every scheduled attempt failed, the target was refused, or the endpoint went away

    @property
    def is_final(self) -> bool:
        return self != DeliveryStatus.PENDING


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_account_id", "account_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    url: Mapped[str] = mapped_column(String(2048))
    # Event types sent to this endpoint; null = all of them.
    events: Mapped[list[str] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=EndpointStatus.ENABLED, server_default="enabled")
    disabled_reason: Mapped[str | None] = mapped_column(String(300))
    # ``whsec_<base64>``. After a rotation the previous secret also signs until previous_secret_expires_at.
    secret: Mapped[str] = mapped_column(String(120))
    previous_secret: Mapped[str | None] = mapped_column(String(120))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebhookMessage(Base):
    """One event about one job, written in the transaction of the job's state change (the outbox).

    Its id is the ``webhook-id`` header of every attempt, and its body is frozen at that moment:
    the job as ``GET /v1/generations/{id}`` showed it then.
    """

    __tablename__ = "webhook_messages"
    __table_args__ = (Index("ix_webhook_messages_job_id", "job_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    job_id: Mapped[str] = mapped_column(String(40))
    # 1, 2, … per job: deliveries to one endpoint go out in this order.
    job_seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(40))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebhookDelivery(Base):
    """One message to one endpoint: its attempts so far and when the next one is due."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # The dispatcher's query: pending deliveries by due time.
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "created_at"),
        # Earlier undelivered messages of the same job to the same endpoint hold later ones back.
        Index("ix_webhook_deliveries_order", "endpoint_id", "job_id", "job_seq"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("webhook_messages.id", ondelete="CASCADE"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(String(40))
    job_seq: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A dispatcher holding the delivery (sending it) until then; another one takes it after.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebhookAttempt(Base):
    """One try at a delivery, for the delivery log partners read when their receiver misbehaves."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery_id", "delivery_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
