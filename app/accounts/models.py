"""Plans, accounts and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, UTCDateTime
from app.kit.clock import utcnow

SCOPES = ("generate", "admin", "moderator")


class Plan(Base):
    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    # None means unlimited.
    monthly_image_quota: Mapped[int | None] = mapped_column(Integer)
    daily_image_quota: Mapped[int | None] = mapped_column(Integer)
    max_width: Mapped[int] = mapped_column(Integer)
    max_height: Mapped[int] = mapped_column(Integer)
    max_steps: Mapped[int] = mapped_column(Integer)
    max_n: Mapped[int] = mapped_column(Integer)
    # Higher runs first in the queue.
    priority: Mapped[int] = mapped_column(Integer, default=0)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    burst: Mapped[int | None] = mapped_column(Integer)
    # In flight = queued + running; queued = waiting for a worker.
    max_concurrent_jobs: Mapped[int | None] = mapped_column(Integer)
    max_queued_jobs: Mapped[int | None] = mapped_column(Integer)
    # None = every model.
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON)
    # A paid plan is monetised inference: some model licences forbid it.
    is_paid: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Stripe prices of this plan: the flat (licensed) part and the metered part on the Billing Meter.
    # A subscription's prices say which plan its account is on (app.billing.subscriptions).
    stripe_price_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_metered_price_id: Mapped[str | None] = mapped_column(String(255))
    # How long finished jobs (images, prompts) are kept before the worker purges them; None = forever.
    retention_hours: Mapped[int | None] = mapped_column(Integer)
    # LoRAs one request may apply; None = as many as a request may carry.
    max_loras: Mapped[int | None] = mapped_column(Integer, default=4, server_default="4")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), default="active")
    # Any plan limit, replaced for this account ({"monthly_image_quota": 5000, ...}).
    limit_overrides: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    # The most explicit content this account may request: safe | questionable | explicit.
    # Safe by default: adult content is something an operator grants, never the default.
    max_rating: Mapped[str] = mapped_column(String(16), default="safe", server_default="safe")
    # Output classifier scores above this withhold the image for human review.
    review_threshold: Mapped[float] = mapped_column(Float, default=0.8, server_default="0.8")
    # Stripe billing (app.billing): the linked customer and the one subscription we follow.
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_linked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255))
    subscription_status: Mapped[str | None] = mapped_column(String(32))
    # `created` of the newest subscription event applied: an older event never overwrites it.
    subscription_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Earliest unpaid failed invoice; from billing_grace_until on, the account's keys get 402.
    billing_past_due_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    billing_grace_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Replaces the plan's retention_hours for this account; None = the plan's.
    retention_hours: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    plan: Mapped[Plan] = relationship(lazy="joined")


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_account_id", "account_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    # Limits this key must respect on top of its account's; only tighter values take effect.
    limit_overrides: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    # What this key's images carry (app.runtime.provenance): full (A1111 parameters + provenance XMP),
    # provenance_only (XMP without prompts) or none.
    metadata_mode: Mapped[str] = mapped_column(String(16), default="full", server_default="full")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    account: Mapped[Account] = relationship(lazy="joined")
