"""Moderation tables: refused prompts (incidents), the artist opt-out registry, the image
review queue and the moderators' audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime
from app.kit.clock import utcnow

# BIGSERIAL on Postgres; SQLite only auto-increments an INTEGER PRIMARY KEY.
_BigId = BigInteger().with_variant(Integer, "sqlite")


class ModerationIncident(Base):
    """One refused generation request: what was asked, by whom, and which rule refused it."""

    __tablename__ = "moderation_incidents"
    __table_args__ = (
        # The strike count: an account's CSAM incidents in the last 24 h.
        Index("ix_moderation_incidents_account_category_created", "account_id", "category", "created_at"),
        Index("ix_moderation_incidents_key_created", "api_key_id", "created_at"),
        Index("ix_moderation_incidents_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    category: Mapped[str] = mapped_column(String(32))
    rule: Mapped[str] = mapped_column(String(64))
    # The list terms that fired: for moderators only, never shown to the caller.
    matched: Mapped[list[str]] = mapped_column(JSON, default=list)
    optout_id: Mapped[int | None] = mapped_column(Integer)
    model: Mapped[str | None] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(String(40))
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    # Counts towards the account's suspension threshold.
    strike: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # This incident's strike crossed the threshold and suspended the account.
    suspended_account: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ArtistOptOut(Base):
    """An artist who asked not to be imitated. Deleting keeps the row (``deleted_at``) for the record."""

    __tablename__ = "artist_optouts"
    __table_args__ = (Index("ix_artist_optouts_deleted_at", "deleted_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    aliases: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Match only next to "by", "artist", "style (of)": for names that are also ordinary words.
    require_context: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ModerationReview(Base):
    """A generated image the output classifier withheld, waiting for a moderator's decision."""

    __tablename__ = "moderation_reviews"
    __table_args__ = (Index("ix_moderation_reviews_status_created", "status", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("job_outputs.id"), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    model: Mapped[str] = mapped_column(String(64))
    # None when the classifier failed on the batch: the image was withheld unscored.
    score: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(12), default="pending")
    decided_by: Mapped[str | None] = mapped_column(String(40))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ModerationAuditEntry(Base):
    """Who did what to which target, when: one row per moderator or opt-out registry action."""

    __tablename__ = "moderation_audit_log"
    __table_args__ = (Index("ix_moderation_audit_log_created", "created_at"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    actor_key_id: Mapped[str] = mapped_column(String(40))
    actor_account_id: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(40))
    target_type: Mapped[str] = mapped_column(String(20))
    target_id: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
