"""Bodies of the licence and revenue endpoints."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.config import LicenseSpec
from app.kit.bounds import column_decimal, column_int
from app.kit.request import RequestModel
from app.licensing.models import License, RevenueEntry

State = Literal["ok", "warning", "critical", "exhausted"]


class LicenseVersionCreate(RequestModel, LicenseSpec):
    monthly_image_cap: int | None = column_int(License.monthly_image_cap, ge=0,
                                               description="Deployment-wide; null = no cap")
    # A float in the licence file; here a decimal bound by its NUMERIC column (2.6e223 was a 500).
    annual_revenue_cap_usd: Decimal | None = column_decimal(  # type: ignore[assignment]
        License.annual_revenue_cap_usd, ge=0, description="null = no revenue cap")
    effective_from: datetime | None = Field(default=None, description="When these terms apply; default: now")


class LicenseTermsOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    version: int
    name: str
    url: str | None
    monetization_allowed: bool
    allowed_plans: list[str] | None
    monthly_image_cap: int | None
    cap_period: str
    annual_revenue_cap_usd: Decimal | None
    warning_thresholds: list[float]
    at_cap: str
    fallback_model: str | None
    effective_from: datetime


class RevenueStatus(BaseModel):
    trailing_12m_usd: Decimal
    cap_usd: Decimal | None
    state: State


class LicenseStatusOut(BaseModel):
    license: LicenseTermsOut
    period_start: date
    period_end: date
    used: int
    reserved: int
    cap: int | None
    remaining: int | None
    overage: int
    projected_period_end: int = Field(description="Images by the period's end at the current rate")
    state: State
    revenue: RevenueStatus


class RevenueCreate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    amount_usd: Decimal = column_decimal(RevenueEntry.amount_usd, ..., gt=0)
    occurred_at: datetime | None = Field(default=None, description="Default: now")
    reference: str | None = Field(default=None, max_length=200, description="Unique: the same reference is kept once")
    note: str | None = Field(default=None, max_length=2000)
    account_id: str | None = Field(default=None, max_length=40)


class RevenueOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    amount_usd: Decimal
    occurred_at: datetime
    source: str
    reference: str | None
    note: str | None
    account_id: str | None
