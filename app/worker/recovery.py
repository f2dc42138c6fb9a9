"""Giving back the jobs of workers that are gone: retried once, then failed, never charged.

Two callers: every worker's sweeper, for jobs whose lease expired (a worker on another host
vanished), and the supervisor, the moment it sees one of its children exit (no need to wait
for the lease).
"""

from __future__ import annotations

import logging
from datetime import datetime

from app.db import Database
from app.queue import repository as queue
from app.queue.notify import publish_job_changed
from app.quotas import service as quotas
from app.worker.state import WorkerState

log = logging.getLogger("ponyserve.worker.recovery")

MAX_ATTEMPTS = 2  # a job whose worker died is retried once, then failed


async def recover_jobs(db: Database, *, now: datetime, worker_id: str | None = None) -> tuple[list[str], list[str]]:
    """Requeues (or, retries used up, fails and releases) abandoned jobs; returns (retried, failed).

    With ``worker_id`` the jobs are that dead worker's and its heartbeat row is marked failed,
    so readiness and the fleet metrics stop counting it at once.
    """
    async with db.unit_of_work() as session:
        retried, failed = await queue.requeue_expired(session, now=now, max_attempts=MAX_ATTEMPTS,
                                                      worker_id=worker_id)
        await quotas.settle_jobs(session, failed, now)
        for job_id in (*retried, *failed):
            await publish_job_changed(session, job_id)
        if worker_id is not None:
            await queue.set_worker_state(session, worker_id, WorkerState.FAILED.value)
    if retried or failed:
        reason = f"worker {worker_id} exited" if worker_id else "lease expired"
        log.warning("%s: retried %s, failed %s", reason, retried, failed)
    return retried, failed
