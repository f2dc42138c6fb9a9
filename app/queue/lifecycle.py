"""The job lifecycle: every state a job can be in and every transition between them, in one place.

```
            claim               generated               delivered
 queued ─────────▶ running ─────────────▶ delivering ────────────▶ succeeded
   ▲                 │                       │
   └──── retry ──────┴───────────────────────┤   (worker lost, an attempt left)
                     │                       │
                     └──────── fail ─────────┴──────────────────▶ failed
   queued, running, delivering ──── cancel ─────────────────────▶ cancelled
```

Each transition is one conditional ``UPDATE … WHERE status IN (<the states it leaves>) RETURNING``,
so whoever moves a job first wins and every later attempt finds nothing to move: a worker
whose lease lapsed cannot succeed a job the sweeper already retried, and a cancel that commits
before the success does wins (the job ends ``cancelled``, nothing is delivered or charged).
Only ``app.settlement`` calls the transitions that end a job; it settles money in the same
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.queue.models import Job, JobStatus

# The states each transition leaves. A job in a state not listed for a transition cannot take it.
CLAIMABLE = (JobStatus.QUEUED,)
GENERATING = (JobStatus.RUNNING,)
# A worker holds the job (its lease is renewed) while it generates and while it delivers.
WORKING = (JobStatus.RUNNING, JobStatus.DELIVERING)
CANCELLABLE = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.DELIVERING)
SUCCEEDABLE = (JobStatus.DELIVERING,)

# A job whose worker was lost is retried once, then failed.
MAX_ATTEMPTS = 2

# Columns cleared whenever a job leaves the hands of a worker.
_RELEASED: dict[str, Any] = {"lease_expires_at": None, "preview": None, "preview_step": None}


def _owned(job_ids: Sequence[str], states: Sequence[JobStatus], worker_id: str | None,
           lease_expired_before: datetime | None = None) -> ColumnElement[bool]:
    """The given jobs while in ``states`` (held by ``worker_id``, with a lease older than ``lease_expired_before``)."""
    condition = and_(Job.id.in_(job_ids), Job.status.in_(states))
    if worker_id is not None:
        condition = and_(condition, Job.worker_id == worker_id)
    if lease_expired_before is not None:
        condition = and_(condition, Job.lease_expires_at < lease_expired_before)
    return condition


async def _move(session: AsyncSession, condition: ColumnElement[bool], values: dict[str, Any]) -> list[str]:
    rows = await session.execute(
        update(Job).where(condition).values(**values).returning(Job.id).execution_options(synchronize_session=False)
    )
    return list(rows.scalars().all())


async def claim(session: AsyncSession, job_ids: Sequence[str], *, worker_id: str, now: datetime,
                lease_until: datetime) -> list[Job]:
    """queued → running for the ids still queued, in the given order (only rows really claimed come back)."""
    claimed = await session.execute(
        update(Job).where(Job.id.in_(job_ids), Job.status.in_(CLAIMABLE))
        .values(status=JobStatus.RUNNING, worker_id=worker_id, attempts=Job.attempts + 1, started_at=now,
                lease_expires_at=lease_until, progress_step=0)
        .returning(Job).execution_options(synchronize_session=False)
    )
    jobs = list(claimed.scalars().all())
    jobs.sort(key=lambda j: list(job_ids).index(j.id))
    return jobs


async def start_delivery(session: AsyncSession, job_ids: Sequence[str], *, worker_id: str) -> set[str]:
    """running → delivering for this worker's jobs; the ids that moved (a cancelled or lost job does not)."""
    return set(await _move(session, _owned(job_ids, GENERATING, worker_id),
                           {"status": JobStatus.DELIVERING, "progress_step": Job.steps, "preview": None,
                            "preview_step": None}))


async def succeed(session: AsyncSession, job_id: str, *, worker_id: str, now: datetime, gpu_seconds: float) -> bool:
    """delivering → succeeded, only while this worker still holds the job and nobody cancelled it."""
    return bool(await _move(session, _owned([job_id], SUCCEEDABLE, worker_id),
                            {"status": JobStatus.SUCCEEDED, "finished_at": now, "gpu_seconds": gpu_seconds,
                             "progress_step": Job.steps, **_RELEASED}))


async def end_unsuccessfully(session: AsyncSession, job_id: str, *, status: JobStatus, code: str, message: str,
                             now: datetime, from_states: Sequence[JobStatus], worker_id: str | None = None,
                             lease_expired_before: datetime | None = None) -> bool:
    """``from_states`` → failed | cancelled (a cancel also raises the job's cancel flag)."""
    assert status in (JobStatus.FAILED, JobStatus.CANCELLED)
    values: dict[str, Any] = {"status": status, "finished_at": now, "error_code": code, "error_message": message,
                              **_RELEASED}
    if status == JobStatus.CANCELLED:
        values["cancel_requested"] = True
    return bool(await _move(session, _owned([job_id], from_states, worker_id, lease_expired_before), values))


async def retry(session: AsyncSession, job_id: str, *, worker_id: str | None = None,
                lease_expired_before: datetime | None = None) -> bool:
    """running | delivering → queued, for a job whose worker was lost and that has attempts left."""
    condition = and_(_owned([job_id], WORKING, worker_id, lease_expired_before), Job.attempts < MAX_ATTEMPTS)
    return bool(await _move(session, condition, {"status": JobStatus.QUEUED, "worker_id": None, "progress_step": 0,
                                                 **_RELEASED}))


async def renew_leases(session: AsyncSession, worker_id: str, job_ids: Sequence[str], lease_until: datetime) -> None:
    """Extends the leases of the jobs this worker is still working on, and of no others: a job the
    worker dropped (its batch failed) keeps its old lease, so the sweeper recovers it."""
    if job_ids:
        await _move(session, _owned(job_ids, WORKING, worker_id), {"lease_expires_at": lease_until})
