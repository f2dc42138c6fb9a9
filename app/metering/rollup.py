"""Daily usage rollup, maintained in the same transaction as the ledger rows it sums."""

from __future__ import annotations

from datetime import date

from sqlalchemy import BigInteger, Date, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base


class UsageDaily(Base):
    __tablename__ = "usage_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    account_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    api_key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    license: Mapped[str | None] = mapped_column(String(64))
    images: Mapped[int] = mapped_column(Integer, default=0)
    megapixel_steps: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    price_units: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)
