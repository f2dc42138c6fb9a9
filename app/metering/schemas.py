"""Bodies of the usage endpoints."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field


class PeriodUsageOut(BaseModel):
    used: int = Field(description="Images delivered in this period")
    reserved: int = Field(description="Images of accepted jobs not finished yet")
    limit: int | None = Field(description="null = unlimited")
    remaining: int | None
    resets_at: datetime


class ScopeUsage(BaseModel):
    day: PeriodUsageOut
    month: PeriodUsageOut


class MyUsage(BaseModel):
    account_id: str
    key_id: str
    account: ScopeUsage
    key: ScopeUsage


class UsageRow(BaseModel):
    group: str
    images: int
    megapixel_steps: float
    gpu_seconds: float
    price_units: int


class UsageReport(BaseModel):
    group_by: str
    from_: date = Field(alias="from")
    to: date
    rows: list[UsageRow]
    total_images: int
