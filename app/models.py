"""Imports every ORM model so ``Base.metadata`` is complete (Alembic, schema tests)."""

from app.accounts.models import Account, ApiKey, Plan
from app.kit.meta import SystemMeta
from app.metering.models import UsageEntry
from app.queue.models import Job, JobOutput, Worker

__all__ = ["Account", "ApiKey", "Job", "JobOutput", "Plan", "SystemMeta", "UsageEntry", "Worker"]
