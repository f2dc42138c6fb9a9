"""Outbox gauges and counters for Prometheus, read from the database.

Reporters run in worker processes that serve no /metrics, so every number here comes from the
outbox and its shared counters table: each API replica exports the same fleet-wide truth.
API processes refresh the snapshot in the background (``billing_metrics_refresh_seconds``) and
whenever an admin reads GET /admin/billing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncSession

from app.billing import repository as repo
from app.billing.models import OutboxStatus
from app.db import Database
from app.kit.clock import utcnow

log = logging.getLogger("ponyserve.billing.metrics")


@dataclass(frozen=True)
class OutboxReading:
    """One read of the outbox, all from the same session: what the admin overview shows."""

    stats: repo.OutboxStats
    oldest_age_seconds: float
    sent_total: int
    failures_total: int


class BillingSnapshot(Collector):
    def __init__(self) -> None:
        self.by_status: dict[str, int] = {}
        self.oldest_age_seconds = 0.0
        self.sent_total = 0
        self.failures_total = 0
        self.webhooks_unprocessed = 0

    async def refresh(self, session: AsyncSession, now: datetime) -> OutboxReading:
        """Reads the outbox into the gauges, and returns that reading. Callers use the reading, not the
        gauges: the gauges are process-wide, and another refresh (another database, in a process serving
        several) may overwrite them between this one and a read of its attributes."""
        stats = await repo.stats(session, now)
        counters = await repo.counters(session)
        _, unprocessed, _ = await repo.webhook_stats(session)
        reading = OutboxReading(
            stats=stats, sent_total=counters.get("sent", 0), failures_total=counters.get("failures", 0),
            oldest_age_seconds=max(0.0, (now - stats.oldest_pending_at).total_seconds())
            if stats.oldest_pending_at else 0.0)
        self.by_status = stats.by_status
        self.oldest_age_seconds = reading.oldest_age_seconds
        self.sent_total, self.failures_total = reading.sent_total, reading.failures_total
        self.webhooks_unprocessed = unprocessed
        return reading

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        backlog = GaugeMetricFamily("ponyserve_billing_outbox_backlog", "Usage events waiting to be sent to Stripe.")
        backlog.add_metric([], self.by_status.get(OutboxStatus.PENDING.value, 0))
        yield backlog
        age = GaugeMetricFamily("ponyserve_billing_outbox_oldest_age_seconds",
                                "Age of the oldest unsent usage event (Stripe refuses events older than 35 days).")
        age.add_metric([], self.oldest_age_seconds)
        yield age
        rows = GaugeMetricFamily("ponyserve_billing_outbox_rows", "Outbox rows by status.", labels=["status"])
        for status in OutboxStatus:
            rows.add_metric([status.value], self.by_status.get(status.value, 0))
        yield rows
        sent = CounterMetricFamily("ponyserve_billing_outbox_sent", "Usage events Stripe accepted, all reporters.")
        sent.add_metric([], self.sent_total)
        yield sent
        failures = CounterMetricFamily("ponyserve_billing_outbox_failures",
                                       "Failed attempts to send usage events, all reporters.")
        failures.add_metric([], self.failures_total)
        yield failures
        pending = GaugeMetricFamily("ponyserve_billing_webhooks_unprocessed",
                                    "Stored Stripe webhook events whose processing failed and awaits a retry.")
        pending.add_metric([], self.webhooks_unprocessed)
        yield pending


BILLING = BillingSnapshot()
REGISTRY.register(BILLING)


async def refresh_loop(db: Database, interval: float) -> None:
    """Keeps this process's billing gauges fresh until cancelled."""
    while True:
        try:
            async with db.unit_of_work() as session:
                await BILLING.refresh(session, utcnow())
        except Exception:
            log.exception("billing metrics refresh failed")
        await asyncio.sleep(interval)


async def stop_task(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
