"""Gauges read from the database in the background: queue depth and age, running jobs, workers.

Every API replica reads the same rows, so each exports the same fleet-wide numbers: dashboards
and alerts take ``max`` across replicas rather than a sum."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.clock import utcnow
from app.queue.models import Job, JobStatus, Worker
from app.worker.state import WorkerState

WORKER_STATES = tuple(state.value for state in WorkerState)


class FleetSnapshot:
    def __init__(self) -> None:
        self.jobs: dict[str, int] = {}
        self.workers: dict[str, int] = {}
        # Worker id → state, for workers heartbeating recently. The ids are bounded by the fleet:
        # a worker that stops heartbeating drops out after worker_stale_seconds.
        self.worker_states: dict[str, str] = {}
        self.oldest_queued_age_seconds = 0.0

    async def refresh(self, session: AsyncSession, worker_stale_seconds: float, now: datetime | None = None) -> None:
        now = now or utcnow()
        rows = await session.execute(
            select(Job.status, func.count()).where(Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
            .group_by(Job.status)
        )
        jobs = {JobStatus.QUEUED.value: 0, JobStatus.RUNNING.value: 0}
        jobs.update({status: int(n) for status, n in rows.all()})
        oldest = await session.scalar(select(func.min(Job.created_at)).where(Job.status == JobStatus.QUEUED))
        since = now - timedelta(seconds=worker_stale_seconds)
        rows = await session.execute(select(Worker.id, Worker.state).where(Worker.heartbeat_at >= since))
        states: dict[str, str] = {str(worker_id): str(state) for worker_id, state in rows.all()}
        counts: dict[str, int] = {}
        for current in states.values():
            counts[current] = counts.get(current, 0) + 1
        self.jobs, self.worker_states, self.workers = jobs, states, counts
        self.oldest_queued_age_seconds = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0


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
        oldest = GaugeMetricFamily("ponyserve_queue_oldest_age_seconds",
                                   "Age of the oldest job still waiting for a worker (0 when none waits).")
        oldest.add_metric([], self.snapshot.oldest_queued_age_seconds)
        yield oldest
        workers = GaugeMetricFamily("ponyserve_workers", "Workers heartbeating recently, by state.",
                                    labels=["state"])
        for state, n in self.snapshot.workers.items():
            workers.add_metric([state], n)
        yield workers
        # One-hot per worker, every state present: a state panel or alert sees 0s, not gaps.
        per_worker = GaugeMetricFamily("ponyserve_worker_state",
                                       "1 for the state each recently heartbeating worker reports, 0 for the others.",
                                       labels=["worker", "state"])
        for worker_id, current in sorted(self.snapshot.worker_states.items()):
            # A state this release does not know (a newer worker mid-rollout) still shows as its 1.
            known = WORKER_STATES if current in WORKER_STATES else (*WORKER_STATES, current)
            for state in known:
                per_worker.add_metric([worker_id, state], 1.0 if state == current else 0.0)
        yield per_worker


# One per process: the default registry refuses a second collector of the same names.
FLEET = FleetSnapshot()
REGISTRY.register(FleetCollector(FLEET))
