"""Giving back the jobs of workers that are gone: retried once, then failed, never charged.

Three callers: every worker's sweeper, for jobs whose lease expired (a worker on another host
vanished, or dropped a batch and stopped renewing its leases); the supervisor, the moment it
sees one of its children exit (no need to wait for the lease); and a worker whose own database
work for a batch failed, once the database answers again. Each job is recovered in its own
transaction (see ``app.settlement``: one job per transaction keeps the lock order simple).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from app.db import Database
from app.queue import repository as queue
from app.queue.models import JobStatus
from app.settlement import service as settlement
from app.worker.state import WorkerState

log = logging.getLogger("ponyserve.worker.recovery")

# How many expired jobs one sweep looks at; the next sweep takes the rest.
SWEEP_LIMIT = 200


async def recover_jobs(db: Database, *, now: datetime, worker_id: str | None = None,
                       job_ids: Iterable[str] | None = None) -> tuple[list[str], list[str]]:
    """Requeues (or, retries used up, fails and releases) abandoned jobs; returns (retried, failed).

    Without ``worker_id``: the working jobs whose lease expired before ``now``. With it: that
    worker's working jobs, lease or not (``job_ids`` narrows them), and when no ``job_ids`` are
    given the worker is known dead, so its heartbeat row is marked failed and readiness and the
    fleet metrics stop counting it at once.
    """
    if job_ids is None:
        async with db.unit_of_work() as session:
            candidates = await queue.abandoned_job_ids(session, now=now, worker_id=worker_id, limit=SWEEP_LIMIT)
    else:
        candidates = sorted(set(job_ids))
    retried, failed = [], []
    expired_before = now if worker_id is None else None
    for job_id in candidates:
        async with db.unit_of_work() as session:
            outcome = await settlement.recover(session, job_id, now=now, worker_id=worker_id,
                                               lease_expired_before=expired_before)
        if outcome == JobStatus.QUEUED:
            retried.append(job_id)
        elif outcome == JobStatus.FAILED:
            failed.append(job_id)
    if worker_id is not None and job_ids is None:
        async with db.unit_of_work() as session:
            await queue.set_worker_state(session, worker_id, WorkerState.FAILED.value)
    if retried or failed:
        reason = f"worker {worker_id} gave them up" if worker_id else "lease expired"
        log.warning("%s: retried %s, failed %s", reason, retried, failed)
    return retried, failed
