"""Scrape-time gauges read from the database: queue depth, running jobs, workers by state."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.clock import utcnow
from app.queue.models import Job, JobStatus, Worker


class FleetSnapshot:
    def __init__(self) -> None:
        self.jobs: dict[str, int] = {}
        self.workers: dict[str, int] = {}

    async def refresh(self, session: AsyncSession, worker_stale_seconds: float) -> None:
        rows = await session.execute(
            select(Job.status, func.count()).where(Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
            .group_by(Job.status)
        )
        self.jobs = {JobStatus.QUEUED.value: 0, JobStatus.RUNNING.value: 0}
        self.jobs.update({status: int(n) for status, n in rows.all()})
        since = utcnow() - timedelta(seconds=worker_stale_seconds)
        rows = await session.execute(
            select(Worker.state, func.count()).where(Worker.heartbeat_at >= since).group_by(Worker.state)
        )
        self.workers = {state: int(n) for state, n in rows.all()}


class FleetCollector(Collector):
    def __init__(self, snapshot: FleetSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily("ponyserve_jobs", "Jobs currently queued or running.", labels=["status"])
        for status, n in self.snapshot.jobs.items():
            jobs.add_metric([status], n)
        yield jobs
        depth = GaugeMetricFamily("ponyserve_queue_depth", "Jobs waiting for a worker.")
        depth.add_metric([], self.snapshot.jobs.get(JobStatus.QUEUED.value, 0))
        yield depth
        workers = GaugeMetricFamily("ponyserve_workers", "Workers heartbeating recently, by state.",
                                    labels=["state"])
        for state, n in self.snapshot.workers.items():
            workers.add_metric([state], n)
        yield workers


# One per process: the default registry refuses a second collector of the same names.
FLEET = FleetSnapshot()
REGISTRY.register(FleetCollector(FLEET))
