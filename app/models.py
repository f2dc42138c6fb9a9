"""Imports every ORM model so ``Base.metadata`` is complete (Alembic, schema tests)."""

from app.accounts.models import Account, ApiKey, Plan
from app.billing.models import BillingCounter, BillingInvoice, BillingOutbox, WebhookEvent
from app.kit.meta import SystemMeta
from app.licensing.models import License, LicenseLock, LicenseReport, LicenseUsageDaily, RevenueEntry
from app.metering.models import UsageEntry
from app.metering.rollup import UsageDaily
from app.moderation.models import ArtistOptOut, ModerationAuditEntry, ModerationIncident, ModerationReview
from app.queue.models import Job, JobOutput, Worker
from app.quotas.models import IdempotencyRecord, QuotaCounter, RateLimitState
from app.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookMessage

__all__ = [
    "Account",
    "ApiKey",
    "ArtistOptOut",
    "BillingCounter",
    "BillingInvoice",
    "BillingOutbox",
    "IdempotencyRecord",
    "Job",
    "JobOutput",
    "License",
    "LicenseLock",
    "LicenseReport",
    "LicenseUsageDaily",
    "ModerationAuditEntry",
    "ModerationIncident",
    "ModerationReview",
    "Plan",
    "QuotaCounter",
    "RateLimitState",
    "RevenueEntry",
    "SystemMeta",
    "UsageDaily",
    "UsageEntry",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
    "WebhookMessage",
    "Worker",
]
