"""Bodies of the moderation endpoints: opt-out registry (admin) and incidents, reviews, audit (moderator)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.kit.request import RequestModel

# withdrawn: the image's owner deleted the job (or retention purged it) before anyone decided.
ReviewStatus = Literal["pending", "approved", "rejected", "withdrawn"]


class OptOutCreate(RequestModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "Jane Example", "aliases": ["janeexample", "j. example"]}]},
    )

    name: str = Field(min_length=1, max_length=200, description="The artist's name as usually written.")
    aliases: list[str] = Field(default_factory=list, max_length=50,
                               description="Other spellings, handles or romanisations (each up to 200 characters).")
    require_context: bool = Field(
        default=False,
        description="Match only next to 'by', 'artist', 'style' or 'style of': for names that are also "
                    "ordinary words. One-character names always need that context.",
    )


class OptOutOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    aliases: list[str]
    require_context: bool
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


class OptOutList(BaseModel):
    data: list[OptOutOut]
    revision: int = Field(description="The registry's change counter; every change increments it.")
    limit: int
    offset: int


class OptOutImportResult(BaseModel):
    created: int = Field(description="New entries.")
    updated: int = Field(description="Existing entries (same name) that gained aliases.")
    unchanged: int = Field(description="Rows that added nothing new.")
    revision: int


class IncidentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    account_id: str
    api_key_id: str
    category: str = Field(description="csam | artist_optout | blocklist | rating_violation")
    rule: str = Field(description="The rule that fired, e.g. 'csam.explicit_age' or 'optout.artist'.")
    matched: list[str] = Field(description="The list terms that fired (never shown to the caller).")
    optout_id: int | None
    model: str | None
    endpoint: str
    prompt: str
    negative_prompt: str
    strike: bool = Field(description="Counted towards the account's automatic suspension.")
    suspended_account: bool = Field(description="This incident's strike suspended the account.")
    created_at: datetime


class IncidentList(BaseModel):
    data: list[IncidentOut]
    limit: int
    offset: int


class ReviewOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    image_id: str
    job_id: str
    account_id: str
    api_key_id: str
    model: str
    score: float | None = Field(description="The classifier's score; null when it failed and the image was "
                                            "withheld unscored.")
    threshold: float = Field(description="The account's review threshold when the image was scored.")
    status: ReviewStatus
    decided_by: str | None = Field(description="Key id of the moderator who decided.")
    decided_at: datetime | None
    note: str | None
    created_at: datetime
    image_url: str = Field(description="Moderator-only link to the withheld image (send your key).")


class ReviewList(BaseModel):
    data: list[ReviewOut]
    limit: int
    offset: int


class ReviewDecision(RequestModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=2000, description="Why; kept with the review and the audit log.")


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    actor_key_id: str
    actor_account_id: str
    action: str = Field(description="e.g. review.approve, review.reject, review.view_image, optout.create, "
                                    "optout.delete, optout.import")
    target_type: str
    target_id: str
    detail: dict[str, Any]
    created_at: datetime


class AuditList(BaseModel):
    data: list[AuditEntryOut]
    limit: int
    offset: int
