"""Licence terms (versioned), live licence counters, revenue entries and frozen monthly reports."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Index, Integer, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime
from app.kit.clock import utcnow


class License(Base):
    """One version of a licence's terms; the version in force is the newest already effective."""

    __tablename__ = "licenses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    url: Mapped[str | None] = mapped_column(String(500))
    monetization_allowed: Mapped[bool] = mapped_column(Boolean, default=True)
    # None = every plan may use models under this licence.
    allowed_plans: Mapped[list[str] | None] = mapped_column(JSON)
    # Deployment-wide images per period; None = no cap.
    monthly_image_cap: Mapped[int | None] = mapped_column(Integer)
    cap_period: Mapped[str] = mapped_column(String(16), default="calendar_month")  # | "rolling_30d"
    annual_revenue_cap_usd: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    warning_thresholds: Mapped[list[float]] = mapped_column(JSON)
    at_cap: Mapped[str] = mapped_column(String(16), default="reject")  # | "fallback" | "allow_overage"
    fallback_model: Mapped[str | None] = mapped_column(String(64))
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LicenseLock(Base):
    """One row per licence id: reservations against a cap serialise on it (across API replicas)."""

    __tablename__ = "license_locks"

    license_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class LicenseUsageDaily(Base):
    """Images per licence per UTC day: used, reserved by accepted jobs, and the overage part of used."""

    __tablename__ = "license_usage_daily"

    license_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    used: Mapped[int] = mapped_column(Integer, default=0)
    reserved: Mapped[int] = mapped_column(Integer, default=0)
    overage: Mapped[int] = mapped_column(Integer, default=0)


class RevenueEntry(Base):
    """Money received, feeding the licences' annual revenue caps (admin entries until billing lands)."""

    __tablename__ = "revenue_entries"
    __table_args__ = (Index("ix_revenue_entries_occurred_at", "occurred_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    amount_usd: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str | None] = mapped_column(String(200), unique=True)
    note: Mapped[str | None] = mapped_column(Text)
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LicenseReport(Base):
    """A closed month's audit report, frozen the first time it is asked for."""

    __tablename__ = "license_reports"

    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # YYYY-MM
    body: Mapped[dict[str, object]] = mapped_column(JSON)
    checksum: Mapped[str] = mapped_column(String(64))
    frozen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
