"""Request and response bodies of the account and key endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from app.accounts.models import Account, Plan
from app.kit.bounds import column_int
from app.kit.request import RequestModel, omittable
from app.runtime.provenance import MetadataMode

Scope = Literal["generate", "admin", "moderator"]
Rating = Literal["safe", "questionable", "explicit"]


class AccountCreate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    plan: str = Field(default="free", min_length=1, max_length=64, description="Plan code")


class PlanOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str
    name: str
    monthly_image_quota: int | None
    daily_image_quota: int | None
    max_width: int
    max_height: int
    max_steps: int
    max_n: int
    priority: int
    retention_hours: int | None = Field(description="Hours a finished job (images, prompts) is kept before it is "
                                                    "purged; null = kept until deleted.")


class AccountOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    status: str
    plan: PlanOut
    max_rating: Rating = Field(description="Most explicit content the account may request (default safe).")
    review_threshold: float = Field(description="Output classifier score above which an image is withheld.")
    created_at: datetime


class AccountList(BaseModel):
    data: list[AccountOut]
    limit: int
    offset: int


_METADATA_DESCRIPTION = (
    "What this key's image files carry: 'full' (the default) = AUTOMATIC1111 parameters (prompts, seed, sampler) "
    "and the provenance XMP (IPTC DigitalSourceType trainedAlgorithmicMedia, model, job id); 'provenance_only' = "
    "the XMP without any prompt; 'none' = neither. Where the operator configured C2PA, 'full' and "
    "'provenance_only' images are also C2PA-signed."
)


class KeyCreate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=200)
    scopes: list[Scope] = Field(default=["generate"], min_length=1)
    limit_overrides: LimitOverrides | None = Field(default=None, description="Tighter limits for this key only")
    metadata: MetadataMode = Field(default="full", description=_METADATA_DESCRIPTION)


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    account_id: str
    name: str
    prefix: str
    scopes: list[str]
    limit_overrides: dict[str, object]
    metadata: MetadataMode = Field(validation_alias=AliasChoices("metadata_mode", "metadata"),
                                   description=_METADATA_DESCRIPTION)
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="The secret key. Shown once: only its hash is stored.")


class KeyPatch(RequestModel):
    """Every field optional: a field left out is unchanged."""

    model_config = ConfigDict(extra="forbid")

    metadata: MetadataMode = omittable(description=_METADATA_DESCRIPTION + " Applies to jobs enqueued from then on. "
                                                   "Not nullable: omit it to keep the current value.")


class LimitOverrides(RequestModel):
    """Any plan limit, for one account (replaces the plan's) or one key (may only tighten)."""

    model_config = ConfigDict(extra="forbid")

    monthly_image_quota: int | None = column_int(Plan.monthly_image_quota, ge=0)
    daily_image_quota: int | None = column_int(Plan.daily_image_quota, ge=0)
    requests_per_minute: int | None = column_int(Plan.requests_per_minute, ge=1)
    burst: int | None = column_int(Plan.burst, ge=1)
    max_concurrent_jobs: int | None = column_int(Plan.max_concurrent_jobs, ge=1)
    max_queued_jobs: int | None = column_int(Plan.max_queued_jobs, ge=1)
    max_width: int | None = column_int(Plan.max_width, ge=64)
    max_height: int | None = column_int(Plan.max_height, ge=64)
    max_steps: int | None = column_int(Plan.max_steps, ge=1)
    max_n: int | None = column_int(Plan.max_n, ge=1)
    max_loras: int | None = column_int(Plan.max_loras, ge=0, le=16)
    priority: int | None = column_int(Plan.priority)
    allowed_models: list[str] | None = Field(default=None, max_length=200)


# PATCH null semantics: a field left out is unchanged; ``null`` clears it where its column is nullable
# (quotas and rate limits: unlimited; allowed_models: every model; Stripe prices: none). Fields
# whose column cannot be empty are typed without null, so an explicit null is a 400 naming the field.
_NOT_NULL = "Not nullable: omit it to keep the current value."


# A century: past that, "forever" (null) says it better, and the purge's date arithmetic stays in range.
MAX_RETENTION_HOURS = 24 * 365 * 100


class PlanFields(RequestModel):
    """A plan's settable fields; as a PATCH body, every field is optional."""

    model_config = ConfigDict(extra="forbid")

    name: str = omittable(min_length=1, max_length=200, description=_NOT_NULL)
    monthly_image_quota: int | None = column_int(Plan.monthly_image_quota, ge=0, description="null = unlimited")
    daily_image_quota: int | None = column_int(Plan.daily_image_quota, ge=0, description="null = unlimited")
    requests_per_minute: int | None = column_int(Plan.requests_per_minute, ge=1, description="null = no rate limit")
    burst: int | None = column_int(Plan.burst, ge=1, description="null = no burst allowance beyond the rate")
    max_concurrent_jobs: int | None = column_int(Plan.max_concurrent_jobs, ge=1,
                                                 description="running jobs per key; null = unlimited")
    max_queued_jobs: int | None = column_int(Plan.max_queued_jobs, ge=1,
                                             description="queued jobs per key; null = unlimited")
    max_width: int = column_int(Plan.max_width, ge=64, description=_NOT_NULL)
    max_height: int = column_int(Plan.max_height, ge=64, description=_NOT_NULL)
    max_steps: int = column_int(Plan.max_steps, ge=1, description=_NOT_NULL)
    max_n: int = column_int(Plan.max_n, ge=1, description=_NOT_NULL)
    max_loras: int | None = column_int(Plan.max_loras, ge=0, le=16,
                                       description="LoRAs one request may apply (default 4); null = up to 16")
    priority: int = column_int(Plan.priority, description=_NOT_NULL)
    allowed_models: list[str] | None = Field(default=None, max_length=200, description="null = every model")
    is_paid: bool = omittable(description="Paid plans are monetised inference (licences may forbid). "
                                                    + _NOT_NULL)
    stripe_price_id: str | None = Field(default=None, pattern=r"^price_[A-Za-z0-9_]{1,200}$",
                                        description="Stripe price of the plan's flat part; names the plan in "
                                                    "subscriptions (unique). null = none")
    stripe_metered_price_id: str | None = Field(default=None, pattern=r"^price_[A-Za-z0-9_]{1,200}$",
                                                description="Stripe price billed per image through the Billing "
                                                            "Meter. null = none")
    retention_hours: int | None = column_int(Plan.retention_hours, ge=1, le=MAX_RETENTION_HOURS,
                                             description="Hours finished jobs are kept (images, prompts; the usage "
                                                         "ledger is kept regardless), then purged by the workers. "
                                                         "null = until deleted")


class PlanCreate(PlanFields):
    code: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    name: str = Field(min_length=1, max_length=200)
    max_width: int = column_int(Plan.max_width, 1024, ge=64)
    max_height: int = column_int(Plan.max_height, 1024, ge=64)
    max_steps: int = column_int(Plan.max_steps, 50, ge=1)
    max_n: int = column_int(Plan.max_n, 4, ge=1)
    max_loras: int | None = column_int(Plan.max_loras, 4, ge=0, le=16)
    priority: int = column_int(Plan.priority, 0)
    is_paid: bool = False


class PlanDetail(PlanOut):
    max_loras: int | None
    requests_per_minute: int | None
    burst: int | None
    max_concurrent_jobs: int | None
    max_queued_jobs: int | None
    allowed_models: list[str] | None
    is_paid: bool
    stripe_price_id: str | None
    stripe_metered_price_id: str | None


class AccountPatch(RequestModel):
    model_config = ConfigDict(extra="forbid")

    """Every field optional: a field left out is unchanged. Only ``limit_overrides`` (clears every
    override) and ``retention_hours`` (follow the plan) take ``null``; the others' columns cannot be
    empty, so ``null`` is refused."""

    name: str = omittable(min_length=1, max_length=200, description=_NOT_NULL)
    plan: str = omittable(min_length=1, max_length=64, description="Plan code. " + _NOT_NULL)
    status: Literal["active", "suspended"] = omittable(description=_NOT_NULL)
    limit_overrides: LimitOverrides | None = Field(
        default=None, description="Replaces the account's overrides; fields left null follow the plan; "
                                  "null clears them all"
    )
    max_rating: Rating = omittable(
        description="Most explicit content the account may request: 'safe' (the default) refuses explicit terms "
                    "and adds rating_safe on Pony models, 'questionable' adds rating_questionable, 'explicit' "
                    "adds nothing. The CSAM guard applies whatever this says. " + _NOT_NULL,
    )
    review_threshold: float = omittable(
        ge=0.0, le=1.0,
        description="Output classifier score above which an image is withheld for review (default 0.8; "
                    "1.0 never withholds). " + _NOT_NULL,
    )
    retention_hours: int | None = column_int(Account.retention_hours, ge=1, le=MAX_RETENTION_HOURS,
                                             description="Hours this account's finished jobs are kept, replacing "
                                                         "the plan's; null = the plan's")


class AccountDetail(AccountOut):
    limit_overrides: dict[str, object]
    stripe_customer_id: str | None = Field(description="Linked Stripe customer (POST .../billing/customer)")
    stripe_subscription_id: str | None
    subscription_status: str | None
    billing_grace_until: datetime | None = Field(description="Set while an invoice is unpaid: from then on the "
                                                             "account's keys get 402 billing_past_due")
    retention_hours: int | None = Field(description="This account's retention, replacing its plan's "
                                                    "(plan.retention_hours); null = the plan's")
