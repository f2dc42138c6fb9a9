"""Request and response bodies of the account and key endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Scope = Literal["generate", "admin", "moderator"]


class AccountCreate(BaseModel):
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


class AccountOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    status: str
    plan: PlanOut
    created_at: datetime


class AccountList(BaseModel):
    data: list[AccountOut]
    limit: int
    offset: int


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=200)
    scopes: list[Scope] = Field(default=["generate"], min_length=1)


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    account_id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="The secret key. Shown once: only its hash is stored.")
