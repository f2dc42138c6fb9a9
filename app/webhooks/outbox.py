"""The webhook outbox: messages about a job, written in the transaction that changes the job."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookMessage


async def forget_job(session: AsyncSession, job_id: str) -> None:
    """Drops every message about the job and their deliveries, sent or not: their bodies carry the
    job's prompts, which a deletion (or retention) removes everywhere."""
    message_ids = select(WebhookMessage.id).where(WebhookMessage.job_id == job_id)
    delivery_ids = select(WebhookDelivery.id).where(WebhookDelivery.message_id.in_(message_ids))
    # Children first, explicitly: SQLite enforces no ON DELETE CASCADE unless foreign keys are switched on.
    await session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(delivery_ids)))
    await session.execute(delete(WebhookDelivery).where(WebhookDelivery.message_id.in_(message_ids)))
    await session.execute(delete(WebhookMessage).where(WebhookMessage.job_id == job_id))
