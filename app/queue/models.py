"""The job queue, its outputs and the workers that drain it."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime
from app.kit.clock import utcnow


class JobStatus(StrEnum):
    """A job's place in its lifecycle; the transitions between them live in ``app.queue.lifecycle``."""

    QUEUED = "queued"
    RUNNING = "running"
    # Generated; its images are being encoded, reviewed, stored and settled. Shown to callers as
    # ``running`` (the public contract has no such state): it is the last moment a cancel still wins.
    DELIVERING = "delivering"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)

    @property
    def public(self) -> str:
        """The status partners see: ``delivering`` is still ``running`` to them."""
        return JobStatus.RUNNING.value if self == JobStatus.DELIVERING else self.value


class OutputStatus(StrEnum):
    DELIVERED = "delivered"
    WITHHELD = "withheld"
    REMOVED = "removed"


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # The claim query: queued jobs in priority order.
        Index("ix_jobs_claim", "status", "priority", "created_at"),
        Index("ix_jobs_account_created", "account_id", "created_at"),
        Index("ix_jobs_key_status", "api_key_id", "status"),
        # One job per idempotency key, enforced by the database: no race between two requests
        # carrying the same key can create a second job (NULL keys are all distinct).
        Index("uq_jobs_api_key_id_idempotency_key", "api_key_id", "idempotency_key", unique=True),
        # The retention purge's range scan: only jobs not yet erased, so erased ones (most old rows once
        # retention runs) cost it nothing.
        Index("ix_jobs_unerased_finished", "finished_at", postgresql_where=text("deleted_at IS NULL"),
              sqlite_where=text("deleted_at IS NULL")),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    model: Mapped[str] = mapped_column(String(64))
    license: Mapped[str | None] = mapped_column(String(64))
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    revised_prompt: Mapped[str] = mapped_column(Text)
    revised_negative_prompt: Mapped[str] = mapped_column(Text, default="")
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int] = mapped_column(Integer)
    guidance_scale: Mapped[float] = mapped_column(Float)
    sampler: Mapped[str] = mapped_column(String(40))
    clip_skip: Mapped[int | None] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    n: Mapped[int] = mapped_column(Integer)
    output_format: Mapped[str] = mapped_column(String(8))
    # Jobs with equal batch keys can share one pipeline call.
    batch_key: Mapped[str] = mapped_column(String(200))
    request_user: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(80))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress_step: Mapped[int] = mapped_column(Integer, default=0)
    # Live previews, opted into per request: one every ``preview_every`` steps (null: none). The
    # newest one (base64 JPEG, a few KB) and the step it shows ride along with progress_step while
    # the job runs, and are cleared when it ends so finished rows do not keep dead bytes.
    preview_every: Mapped[int | None] = mapped_column(Integer)
    preview: Mapped[str | None] = mapped_column(Text)
    preview_step: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    gpu_seconds: Mapped[float | None] = mapped_column(Float)
    # Quota reservation taken at enqueue: the periods it counts in and whether it is still
    # held, turned into usage (committed) or given back (released).
    quota_day: Mapped[date | None] = mapped_column(Date)
    quota_month: Mapped[date | None] = mapped_column(Date)
    reservation_state: Mapped[str] = mapped_column(String(12), default="none", server_default="none")
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    # The model the caller asked for, when a licence cap routed the job to a fallback model.
    requested_model: Mapped[str | None] = mapped_column(String(64))
    requested_license: Mapped[str | None] = mapped_column(String(64))
    # Reserved beyond the licence cap under an allow_overage policy.
    license_overage: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The caller's own labels (up to 16 string pairs): returned on the job and its webhooks, filterable in listings.
    request_metadata: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON)
    # The LoRA set, canonical (sorted by name, weights resolved): [{"name", "weight", "text_encoder_weight"}].
    loras: Mapped[list[dict[str, object]] | None] = mapped_column(JSON)
    # img2img / inpainting (app.generation.image_inputs): the stored init image and mask (storage keys), strength
    # and how to fit them; None for text-to-image.
    inputs: Mapped[dict[str, object] | None] = mapped_column(JSON)
    # Hires. fix: {"base_width", "base_height", "denoise", "steps", "upscaler"}; width/height are the final size.
    hires: Mapped[dict[str, object] | None] = mapped_column(JSON)
    # What the image files say about themselves (app.runtime.provenance): full | provenance_only | none,
    # copied from the key at enqueue.
    metadata_mode: Mapped[str] = mapped_column(String(16), default="full", server_default="full")
    # store=false: nothing is kept once the synchronous response is sent.
    store: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # Deleted by its owner or purged by retention: images and prompts are gone, the row (and the
    # ledger's) stays for the money records; every read path treats it as absent.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    plan_code: Mapped[str | None] = mapped_column(String(64))
    plan_paid: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


def input_storage_keys(inputs: dict[str, object] | None) -> list[str]:
    """The storage keys an img2img job's uploads occupy (``Job.inputs``: init image, mask)."""
    if not inputs:
        return []
    return [str(inputs[k]) for k in ("init", "mask") if inputs.get(k)]


class JobOutput(Base):
    """One generated image."""

    __tablename__ = "job_outputs"
    __table_args__ = (Index("ix_job_outputs_job_id", "job_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    index: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(8))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(String(300))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    # delivered | withheld (the output classifier flagged it; held for review, not served) |
    # removed (a moderator rejected it; its bytes are deleted).
    status: Mapped[str] = mapped_column(String(12), default=OutputStatus.DELIVERED, server_default="delivered")
    # Whether this image is in the ledger and the quota's usage (withheld images of safe accounts are not).
    charged: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    @property
    def withheld(self) -> bool:
        return self.status != OutputStatus.DELIVERED


class Worker(Base):
    """A worker's heartbeat row: what /readyz and /metrics read about the fleet."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    device: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(16))
    models: Mapped[list[str]] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
