"""Imports every ORM model so ``Base.metadata`` is complete (Alembic, schema tests)."""

from app.accounts.models import Account, ApiKey, Plan
from app.kit.meta import SystemMeta
from app.metering.models import UsageEntry
from app.metering.rollup import UsageDaily
from app.queue.models import Job, JobOutput, Worker
from app.quotas.models import IdempotencyRecord, QuotaCounter, RateLimitState

__all__ = [
    "Account", "ApiKey", "IdempotencyRecord", "Job", "JobOutput", "Plan", "QuotaCounter", "RateLimitState",
    "SystemMeta", "UsageDaily", "UsageEntry", "Worker",
]
