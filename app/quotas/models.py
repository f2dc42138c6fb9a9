"""Quota counters, rate-limit state and idempotency records."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime
from app.kit.clock import utcnow


class QuotaCounter(Base):
    """Images used and reserved by one account or key in one UTC day or month."""

    __tablename__ = "quota_counters"

    scope: Mapped[str] = mapped_column(String(8), primary_key=True)  # "account" | "key"
    scope_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    period: Mapped[str] = mapped_column(String(8), primary_key=True)  # "day" | "month"
    period_start: Mapped[date] = mapped_column(Date, primary_key=True)
    used: Mapped[int] = mapped_column(Integer, default=0)
    reserved: Mapped[int] = mapped_column(Integer, default=0)
    # The limit in force at the last reservation (None = unlimited); reservations compare against it.
    cap: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RateLimitState(Base):
    """GCRA: the theoretical arrival time of the next request, per key (seconds since the epoch)."""

    __tablename__ = "rate_limit_state"

    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    tat: Mapped[float] = mapped_column(Float)


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    # "accepting" while the first request is being validated and enqueued, then "accepted".
    state: Mapped[str] = mapped_column(String(12))
    job_id: Mapped[str | None] = mapped_column(String(40))
    endpoint: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
