"""Bodies of the partner webhook endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.kit.request import RequestModel
from app.webhooks.targets import MAX_URL_LENGTH

EventName = Literal["generation.started", "generation.succeeded", "generation.failed", "generation.cancelled"]
_EVENTS_DOC = ("Which events to send: generation.started, generation.succeeded, generation.failed, "
               "generation.cancelled. Omitted or null: all of them.")


class WebhookCreate(RequestModel):
    url: str = Field(min_length=1, max_length=MAX_URL_LENGTH,
                     description="Where deliveries are POSTed: an https:// (or http://) URL that resolves to a public "
                                 "address.")
    events: list[EventName] | None = Field(default=None, min_length=1, max_length=4, description=_EVENTS_DOC)


class WebhookOut(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    events: list[EventName] | None = Field(description=_EVENTS_DOC)
    status: Literal["enabled", "disabled"] = Field(
        description="'disabled' once the receiver answered 410 Gone; register again to resume.")
    disabled_reason: str | None
    created_at: datetime
    previous_secret_expires_at: datetime | None = Field(
        description="After a rotation: until then the previous secret also signs every delivery.")


class WebhookWithSecret(WebhookOut):
    secret: str = Field(description="The signing secret (whsec_…). Shown only here: store it now.")


class WebhookList(BaseModel):
    object: Literal["list"] = "list"
    data: list[WebhookOut]


class AttemptOut(BaseModel):
    attempted_at: datetime
    status_code: int | None = Field(description="The receiver's HTTP status; null if no response came.")
    error: str | None
    duration_ms: int


class DeliveryOut(BaseModel):
    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    webhook_id: str = Field(description="The message's id: the webhook-id header of every attempt.")
    event: EventName
    generation_id: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: datetime | None = Field(description="While pending: when the next attempt is due.")
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    attempt_log: list[AttemptOut]


class DeliveryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DeliveryOut]
    has_more: bool
    last_id: str | None = Field(description="Pass as `after` for the next page.")
