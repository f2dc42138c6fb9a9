"""Effective limits: the plan's, replaced by the account's overrides, tightened by the key's."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from app.accounts.models import Account, ApiKey, Plan

# Limits where "more" is looser; a key override may only lower them. None = unlimited.
NUMERIC_LIMITS = (
    "monthly_image_quota", "daily_image_quota", "requests_per_minute", "burst", "max_concurrent_jobs",
    "max_queued_jobs", "max_width", "max_height", "max_steps", "max_n", "max_loras",
)
OVERRIDABLE = (*NUMERIC_LIMITS, "priority", "allowed_models")


@dataclass(frozen=True)
class Limits:
    monthly_image_quota: int | None
    daily_image_quota: int | None
    requests_per_minute: int | None
    burst: int | None
    max_concurrent_jobs: int | None
    max_queued_jobs: int | None
    max_width: int
    max_height: int
    max_steps: int
    max_n: int
    max_loras: int | None
    priority: int
    allowed_models: tuple[str, ...] | None

    def allows_model(self, name: str) -> bool:
        return self.allowed_models is None or name in self.allowed_models


def _tighter(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def plan_limits(plan: Plan) -> Limits:
    values = {f.name: getattr(plan, f.name) for f in fields(Limits)}
    if values["allowed_models"] is not None:
        values["allowed_models"] = tuple(values["allowed_models"])
    return Limits(**values)


def effective_limits(account: Account, key: ApiKey | None = None) -> Limits:
    limits = plan_limits(account.plan)
    account_overrides = {k: v for k, v in (account.limit_overrides or {}).items() if k in OVERRIDABLE}
    if "allowed_models" in account_overrides and account_overrides["allowed_models"] is not None:
        account_overrides["allowed_models"] = tuple(account_overrides["allowed_models"])
    limits = replace(limits, **account_overrides)
    if key is None or not key.limit_overrides:
        return limits
    tightened: dict[str, Any] = {}
    for name, value in key.limit_overrides.items():
        if name in NUMERIC_LIMITS:
            tightened[name] = _tighter(getattr(limits, name), value)
        elif name == "allowed_models" and value is not None:
            allowed = set(value) if limits.allowed_models is None else set(value) & set(limits.allowed_models)
            tightened[name] = tuple(sorted(allowed))
    return replace(limits, **tightened)
