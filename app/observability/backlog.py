"""Webhook delivery backlog gauges, read from the outbox in the background like the fleet's.

Two different problems look alike in a plain count of pending deliveries: a partner whose
receiver is down (its deliveries wait for their next scheduled retry, which is normal) and
dispatchers that cannot keep up (deliveries whose time has come but nobody sends). The gauges
keep them apart: ``due`` (a dispatcher could send it now) against ``scheduled`` (its next try is
later, or an earlier message of the same job to the same endpoint goes first), and how long the
oldest due one has waited."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import and_, case, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.webhooks.models import DeliveryStatus, WebhookDelivery

DUE, SCHEDULED = "due", "scheduled"


class WebhookBacklog(Collector):
    def __init__(self) -> None:
        self.pending: dict[str, int] = {DUE: 0, SCHEDULED: 0}
        self.oldest_due_age_seconds = 0.0

    async def refresh(self, session: AsyncSession, now: datetime) -> None:
        earlier = aliased(WebhookDelivery)
        # What the dispatchers' own query (webhooks.deliveries.due) would pick, less the leases:
        # one being sent right now is still due until it succeeds.
        due = and_(
            or_(WebhookDelivery.next_attempt_at.is_(None), WebhookDelivery.next_attempt_at <= now),
            ~exists().where(earlier.endpoint_id == WebhookDelivery.endpoint_id,
                            earlier.job_id == WebhookDelivery.job_id, earlier.job_seq < WebhookDelivery.job_seq,
                            earlier.status == DeliveryStatus.PENDING.value),
        )
        kind = case((due, DUE), else_=SCHEDULED).label("kind")
        since = func.min(func.coalesce(WebhookDelivery.next_attempt_at, WebhookDelivery.created_at))
        rows = (await session.execute(
            select(kind, func.count(), since).where(WebhookDelivery.status == DeliveryStatus.PENDING.value)
            .group_by(kind)
        )).all()
        pending = {DUE: 0, SCHEDULED: 0}
        oldest_due: datetime | None = None
        for name, n, first in rows:
            pending[name] = int(n)
            if name == DUE:
                oldest_due = first
        self.pending = pending
        self.oldest_due_age_seconds = max(0.0, (now - oldest_due).total_seconds()) if oldest_due else 0.0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pending = GaugeMetricFamily(
            "ponyserve_webhook_deliveries_pending",
            "Undelivered webhook deliveries: due (a dispatcher could send it now) or scheduled (a later try).",
            labels=["state"])
        for name, n in self.pending.items():
            pending.add_metric([name], n)
        yield pending
        age = GaugeMetricFamily("ponyserve_webhook_oldest_due_age_seconds",
                                "How long the most overdue due webhook delivery has waited for a dispatcher.")
        age.add_metric([], self.oldest_due_age_seconds)
        yield age


WEBHOOK_BACKLOG = WebhookBacklog()
REGISTRY.register(WEBHOOK_BACKLOG)
