"""The append-only usage ledger: one row per delivered image."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, Float, ForeignKey, Index, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime
from app.kit.clock import utcnow


class UsageEntry(Base):
    __tablename__ = "usage_ledger"
    __table_args__ = (
        Index("ix_usage_ledger_account_created", "account_id", "created_at"),
        Index("ix_usage_ledger_key_created", "api_key_id", "created_at"),
        Index("ix_usage_ledger_job_id", "job_id"),
        Index("ix_usage_ledger_license_created", "license", "created_at"),
        Index("ix_usage_ledger_license_usage_day", "license", "usage_day"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    image_id: Mapped[str] = mapped_column(ForeignKey("job_outputs.id"), unique=True)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    model: Mapped[str] = mapped_column(String(64))
    license: Mapped[str | None] = mapped_column(String(64))
    images: Mapped[int] = mapped_column(Integer, default=1)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int] = mapped_column(Integer)
    megapixel_steps: Mapped[float] = mapped_column(Float)
    gpu_seconds: Mapped[float] = mapped_column(Float)
    # The plan at generation time (licence reports split free and paid), and whether the image
    # was generated beyond its licence cap under an allow_overage policy.
    plan_code: Mapped[str | None] = mapped_column(String(64))
    plan_paid: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    license_overage: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Thousandths of a reference image (1024x1024, 30 steps): what price plans multiply.
    price_units: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The UTC day this image counts in — the day its job's quota and licence reservation was
    # taken — so counters, rollups and licence reports put it in the same period even when the
    # job finishes after midnight (or at month end). ``created_at`` stays when it was written.
    usage_day: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
